# The soak test (tests/soak.py): clients under mixed load against a daemon
# killed and restarted every 30 s, clients killed at random. Not part of
# `make test`; SOAK_MINUTES sets its length.
#   make soak                   10 minutes
#   make soak SOAK_MINUTES=2
SOAK_MINUTES ?= 10

.PHONY: soak
soak: deps
	@$(MAKE) --no-print-directory lib pagerd hakctl $(BUILD)/soak_client
	$(PYTHON) tests/soak.py --build $(BUILD) --minutes $(SOAK_MINUTES)

# Standard malloc API only: it runs under LD_PRELOAD like any program.
$(BUILD)/soak_client: tests/soak_client.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) -O2 -g $(CFLAGS) -o $@ $< -lpthread
