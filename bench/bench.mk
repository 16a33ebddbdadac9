# Benchmark suite; included by the top-level Makefile.
#   make bench-bin    build the workload programs into $(BUILD)/bench/
#   make bench        quick comparison against glibc, mimalloc, jemalloc, tcmalloc
#   make bench-full   the same with longer runs and more repetitions
#   make bench-flood  the daemon: a busy client's refill latency under a status flood (bench/daemon/)
#   make bench-misuse heap misuses under every allocator: which ones each notices
# Extra harness options: make bench BENCH_ARGS='--only larson_tiny --reps 5'

BUILD        ?= build
PYTHON       ?= /usr/bin/python3
BENCH_ARGS   ?=
# Workloads use only the standard malloc API: the same binary runs under
# every allocator through LD_PRELOAD, so they link nothing but pthreads.
BENCH_CFLAGS := -std=gnu11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -Wshadow \
                -Wstrict-prototypes -Wmissing-prototypes $(CFLAGS)
BENCH_SRC    := $(wildcard bench/*.c)
BENCH_BIN    := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: bench bench-full bench-bin bench-flood bench-misuse

bench-bin: $(BENCH_BIN)

$(BUILD)/bench/%: bench/%.c bench/bench_util.h
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -o $@ $< -lpthread

# deps (top-level Makefile) installs the compiler and python3 on a fresh machine.
bench: deps
	$(PYTHON) bench/bench.py --quick --build $(BUILD) $(BENCH_ARGS)

bench-full: deps
	$(PYTHON) bench/bench.py --full --build $(BUILD) $(BENCH_ARGS)

bench-misuse: deps lib bench-bin
	$(PYTHON) bench/misuse.py --build $(BUILD)

# The daemon's own measurements: raw protocol clients, linked with shm/.
$(BUILD)/bench-daemon/%: bench/daemon/%.c $(SHM_OBJ) shm/hakmem_shm.h
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -Ishm -o $@ $< $(SHM_OBJ)

bench-flood: deps
	@$(MAKE) --no-print-directory pagerd $(BUILD)/bench-daemon/status_flood
	$(BUILD)/bench-daemon/status_flood $(BUILD)/hakmem-pagerd
