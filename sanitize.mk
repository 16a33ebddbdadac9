# Sanitizer and valgrind runs; included by the top-level Makefile.
#   make asan      library, daemon, hakctl and cmocka tests with AddressSanitizer
#                  and UndefinedBehaviorSanitizer in build-asan/, then run the tests
#   make tsan      the same with ThreadSanitizer in build-tsan/
#   make valgrind  the daemon's tests with the daemon under valgrind memcheck
# The library is built with -DHAK_NO_OVERRIDE: it does not replace malloc
# (the tests call the hak_* names), so the sanitizer keeps its own. Any
# report fails the test that caused it: undefined behaviour too
# (-fno-sanitize-recover), and the daemon's reports through its exit
# status, which the daemon tests check when they stop it.

SAN_FLAGS  := -fno-omit-frame-pointer -DHAK_NO_OVERRIDE
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined $(SAN_FLAGS)
TSAN_FLAGS := -fsanitize=thread $(SAN_FLAGS)

# Test programs neither built nor run under a sanitizer, each with the reason.
# test_override: checks that the standard names (malloc, free_sized, the
#   C library's own allocations) are hakmem's; a HAK_NO_OVERRIDE library
#   does not define them.
SAN_SKIP   := test_override
# Single steps not checked, at the test (TEST_ASAN, TEST_TSAN in testutil.h):
#   memory assertions on the whole process's RSS: a sanitizer's shadow and
#     per-thread state grow with the test's work (and on a kernel without a
#     shared zero page, shadow that is only read is resident too); the same
#     assertions on hakmem's own resident memory (own_kib) are checked;
#   test_fork, a new thread in the child: not under TSan, which cannot
#     start threads in the child of a multi-threaded fork.
# The shell tests (tests/test_*.sh) test the shared library and installed
# files, which these builds do not make: run_tests.sh leaves them out.

# Leaks of the C library's malloc (the daemon's, the tests' own; hakmem's
# blocks are not the sanitizer's to see) and stack use after return are
# errors too. A report makes the process exit 86 (ASan, UBSan) or 66
# (TSan), which the daemon never does itself: a test expecting it to exit
# 1 or 2 still notices.
ASAN_ENV   := ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1:exitcode=86 \
              UBSAN_OPTIONS=print_stacktrace=1:exitcode=86
TSAN_ENV   := TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:exitcode=66
# gcc 12's TSan may fail to place its shadow when the kernel randomises
# mmap with more than 28 bits (vm.mmap_rnd_bits = 32 on some newer
# kernels): the tests run without address randomisation.
TSAN_RUN   := setarch $$(uname -m) -R

.PHONY: asan tsan valgrind san-build

# What a sanitizer build needs: the archive (a sanitized shared library
# could not be preloaded), the daemon, hakctl and the cmocka tests.
san-build: $(LIB_A) pagerd hakctl $(filter-out $(SAN_SKIP:%=$(BUILD)/tests/%),$(TEST_BIN))

asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS='$(CFLAGS) $(ASAN_FLAGS)' \
	    LDFLAGS='$(LDFLAGS) $(ASAN_FLAGS)' san-build
	@echo "== not run under asan: $(SAN_SKIP) (sanitize.mk says why)"
	@$(ASAN_ENV) HAK_TEST_SANITIZER=asan tests/run_tests.sh build-asan

tsan: deps
	@$(MAKE) --no-print-directory BUILD=build-tsan CFLAGS='$(CFLAGS) $(TSAN_FLAGS)' \
	    LDFLAGS='$(LDFLAGS) $(TSAN_FLAGS)' san-build
	@echo "== not run under tsan: $(SAN_SKIP) (sanitize.mk says why)"
	@$(TSAN_ENV) HAK_TEST_SANITIZER=tsan $(TSAN_RUN) tests/run_tests.sh build-tsan

# The release build's tests; only the daemon runs under valgrind (its
# tests start it through tests/pagerd_client.h, which honours the wrapper).
valgrind: deps
	@$(MAKE) --no-print-directory lib tests-build
	@tests/valgrind_pagerd.sh $(BUILD)

clean: clean-san
.PHONY: clean-san
clean-san:
	rm -rf build-asan build-tsan
