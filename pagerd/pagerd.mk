# hakmem-pagerd, the per-host page daemon. Included by the top-level
# Makefile; `make all` and the tests build it.
PAGERD_SRC  := $(wildcard pagerd/*.c)
PAGERD_OBJ  := $(PAGERD_SRC:%.c=$(BUILD)/obj/%.o)
PAGERD_BIN  := $(BUILD)/hakmem-pagerd
PAGERD_LIBS := -luring -lnuma -lm
# The daemon links the contract's objects as built for the library.
SHM_OBJ     := $(SHM_SRC:%.c=$(BUILD)/obj/%.o)

.PHONY: pagerd
pagerd: $(PAGERD_BIN)
all: pagerd
tests-build: pagerd

$(BUILD)/obj/pagerd/%.o: pagerd/%.c pagerd/pagerd.h shm/hakmem_shm.h
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(OPT) -Ishm -Ipagerd $(CFLAGS) -c $< -o $@

$(PAGERD_BIN): $(PAGERD_OBJ) $(SHM_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(PAGERD_LIBS)

# The daemon's tests share a raw protocol client.
$(BUILD)/tests/test_pagerd $(BUILD)/tests/test_pagerd_hostile $(BUILD)/tests/test_pagerd_client $(BUILD)/tests/test_faults: tests/pagerd_client.h
