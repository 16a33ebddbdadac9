# hakmem build.
#   make            release library: build/libhakclient.so (+ soname links) and .a
#   make test       build and run every test
#   make debug      the same library and tests with assertions on, in build-debug/
#   make bench      the quick comparison with the peer allocators (bench/bench.mk)
#   make asan       library, daemon and cmocka tests with ASan+UBSan in build-asan/, and run them (sanitize.mk)
#   make tsan       the same with ThreadSanitizer in build-tsan/ (sanitize.mk)
#   make valgrind   the daemon's tests with the daemon under valgrind memcheck (sanitize.mk)
#   make fuzz       libFuzzer targets for the parsers of the other side's data, FUZZ_SECONDS (60) each (fuzz.mk)
#   make soak       10 minutes of mixed load, daemon and clients killed at random (soak.mk)
#   make install    library, header, pkg-config file, daemon, hakctl, units, man pages (install.mk)
#   make clean

VERSION    := 0.1.0
SOMAJOR    := 0
BUILD      ?= build
MODE       ?= release

CC         ?= cc
CSTD       := -std=gnu11 -D_GNU_SOURCE
WARN       := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
# Internal symbols hidden; the fast paths use initial-exec TLS and no PLT.
LIBFLAGS   := -fPIC -fvisibility=hidden -ftls-model=initial-exec -fno-plt \
              -fno-semantic-interposition
ifeq ($(MODE),debug)
OPT        := -O1 -g -DHAK_DEBUG
else
OPT        := -O2 -g
endif
CFLAGS_ALL := $(CSTD) $(WARN) $(OPT) -Iinclude -Iclient -Ishm $(CFLAGS)

SHM_SRC    := $(wildcard shm/*.c)
CLIENT_SRC := $(wildcard client/*.c) $(SHM_SRC)
CLIENT_OBJ := $(CLIENT_SRC:%.c=$(BUILD)/obj/%.o)
SONAME     := libhakclient.so.$(SOMAJOR)
LIB_SO     := $(BUILD)/libhakclient.so.$(VERSION)
LIB_A      := $(BUILD)/libhakclient.a

TEST_SRC   := $(wildcard tests/test_*.c)
TEST_BIN   := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_LIBS  := -lcmocka -lpthread

.PHONY: all lib deps test tests-build debug clean
all: lib
lib: $(LIB_SO) $(BUILD)/libhakclient.so $(LIB_A)

$(BUILD)/obj/client/%.o: client/%.c $(wildcard client/*.h) include/hakmem.h shm/hakmem_shm.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LIBFLAGS) -c $< -o $@

$(BUILD)/obj/shm/%.o: shm/%.c shm/hakmem_shm.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LIBFLAGS) -c $< -o $@

$(LIB_SO): $(CLIENT_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,-z,now -Wl,--no-undefined -o $@ $^ -lpthread
	ln -sf libhakclient.so.$(VERSION) $(BUILD)/$(SONAME)

$(BUILD)/libhakclient.so: $(LIB_SO)
	ln -sf $(SONAME) $@

# One relocatable object: a program that links the archive gets every
# entry point or none, never our malloc with the C library's realloc.
$(LIB_A): $(CLIENT_OBJ)
	rm -f $@
	$(LD) -r -o $(BUILD)/obj/hakclient.o $^
	ar rcs $@ $(BUILD)/obj/hakclient.o

$(BUILD)/tests/%: tests/%.c tests/testutil.h $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests -o $@ $< $(LIB_A) $(TEST_LIBS)

# Installs missing Debian packages first (cmocka), so a fresh machine works.
deps:
	@tests/install-deps.sh

test: deps
	@$(MAKE) --no-print-directory lib tests-build
	@tests/run_tests.sh $(BUILD)

tests-build: $(TEST_BIN)

debug:
	$(MAKE) BUILD=build-debug MODE=debug test

clean:
	rm -rf build build-debug
include pagerd/pagerd.mk
include bench/bench.mk
include install.mk
include sanitize.mk
include fuzz.mk
include soak.mk
