# libFuzzer targets for every parser of what the other side controls
# (tests/fuzz/fuzz_*.c; tests/fuzz/README.md says what each reaches),
# built with clang, AddressSanitizer and UndefinedBehaviorSanitizer into
# build-fuzz/. Included by the top-level Makefile.
#   make fuzz          build, then run each target FUZZ_SECONDS (60), one at a time
#   make fuzz-build    build only (tests/test_fuzz.sh runs each for a few seconds)
# New inputs a run finds go to build-fuzz/corpus/, crashes to
# build-fuzz/artifacts/; the seeds in tests/fuzz/corpus/ are never written.

FUZZ_BUILD   ?= build-fuzz
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS  := $(CSTD) $(WARN) -O1 -g $(FUZZ_SAN) -fsanitize=fuzzer-no-link \
                -Iinclude -Iclient -Ishm -Ipagerd -Itests/fuzz -DHAKCTL_VERSION='"$(VERSION)"'
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS    := $(FUZZ_NAMES:%=$(FUZZ_BUILD)/fuzz_%)

# The project's own files each target links, compiled again with the
# sanitizers: the daemon without main.c, loop.c and cgroup.c
# (pagerd_harness.c stands in for them), the client's connection without
# the allocator.
FUZZ_PAGERD  := $(SHM_SRC) pagerd/config.c pagerd/log.c pagerd/pool.c pagerd/reclaim.c pagerd/session.c \
                pagerd/status.c pagerd/charger.c pagerd/users.c pagerd/pages.c tests/fuzz/pagerd_harness.c
FUZZ_CLIENT  := $(SHM_SRC) client/provider_pagerd.c client/os.c client/arena.c client/options.c client/report.c
FUZZ_HAKCTL  := $(SHM_SRC) pagerd/hakctl_query.c pagerd/hakctl_print.c
fuzz_objs     = $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(1))

$(FUZZ_BUILD)/fuzz_shm_msg $(FUZZ_BUILD)/fuzz_shm_ring: $(call fuzz_objs,$(SHM_SRC))
$(FUZZ_BUILD)/fuzz_pagerd_msg $(FUZZ_BUILD)/fuzz_pagerd_ring: $(call fuzz_objs,$(FUZZ_PAGERD))
$(FUZZ_BUILD)/fuzz_client_layout: $(call fuzz_objs,$(FUZZ_CLIENT))
$(FUZZ_BUILD)/fuzz_hakctl_status: $(call fuzz_objs,$(FUZZ_HAKCTL))
FUZZ_LIBS_pagerd_msg    := -lnuma
FUZZ_LIBS_pagerd_ring   := -lnuma
FUZZ_LIBS_hakctl_status := -lpthread

.PHONY: fuzz fuzz-build fuzz-clean
fuzz: deps
	@$(MAKE) --no-print-directory fuzz-build
	@tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz-build: $(FUZZ_BINS)

# Kept, not deleted as intermediate files: the next build reuses them.
.SECONDARY: $(FUZZ_NAMES:%=$(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o)
$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(FUZZ_LIBS_$*)

$(FUZZ_BUILD)/obj/%.o: %.c shm/hakmem_shm.h $(wildcard client/*.h pagerd/*.h tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

fuzz-clean:
	rm -rf $(FUZZ_BUILD)
clean: fuzz-clean
