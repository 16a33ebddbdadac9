# hakmem-pagerd, the per-host page daemon, and hakctl, its status tool
# (pagerd/hakctl*.c). Included by the top-level Makefile; `make all` and
# the tests build both.
HAKCTL_SRC  := $(wildcard pagerd/hakctl*.c)
HAKCTL_OBJ  := $(HAKCTL_SRC:%.c=$(BUILD)/obj/%.o)
HAKCTL_BIN  := $(BUILD)/hakctl
PAGERD_SRC  := $(filter-out $(HAKCTL_SRC),$(wildcard pagerd/*.c))
PAGERD_OBJ  := $(PAGERD_SRC:%.c=$(BUILD)/obj/%.o)
PAGERD_BIN  := $(BUILD)/hakmem-pagerd
PAGERD_LIBS := -luring -lnuma -lm
# The daemon links the contract's objects as built for the library.
SHM_OBJ     := $(SHM_SRC:%.c=$(BUILD)/obj/%.o)

.PHONY: pagerd hakctl
pagerd: $(PAGERD_BIN)
hakctl: $(HAKCTL_BIN)
all: pagerd hakctl
tests-build: pagerd hakctl

$(BUILD)/obj/pagerd/%.o: pagerd/%.c pagerd/pagerd.h shm/hakmem_shm.h
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(OPT) -Ishm -Ipagerd $(CFLAGS) -c $< -o $@

$(PAGERD_BIN): $(PAGERD_OBJ) $(SHM_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(PAGERD_LIBS)

$(HAKCTL_OBJ): $(BUILD)/obj/%.o: %.c pagerd/hakctl.h shm/hakmem_shm.h
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(OPT) -Ishm -Ipagerd -DHAKCTL_VERSION='"$(VERSION)"' $(CFLAGS) -c $< -o $@

$(HAKCTL_BIN): $(HAKCTL_OBJ) $(SHM_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^

# The daemon's tests share a raw protocol client.
$(BUILD)/tests/test_pagerd $(BUILD)/tests/test_pagerd_hostile $(BUILD)/tests/test_pagerd_activation \
    $(BUILD)/tests/test_pagerd_client $(BUILD)/tests/test_pagerd_users $(BUILD)/tests/test_pagerd_idle \
    $(BUILD)/tests/test_faults: tests/pagerd_client.h

# Tests of the daemon's own code link its objects (pagerd.h, no loop).
PAGERD_TEST_OBJ := $(BUILD)/obj/pagerd/cgroup.o
$(BUILD)/tests/test_cgroup $(BUILD)/tests/test_pagerd_cgroup: $(BUILD)/tests/%: tests/%.c tests/testutil.h \
    tests/pagerd_client.h $(LIB_A) $(PAGERD_TEST_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests -Ipagerd -o $@ $< $(PAGERD_TEST_OBJ) $(LIB_A) $(TEST_LIBS)
