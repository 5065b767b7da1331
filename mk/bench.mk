# make bench: koophone against the C libcurl floor and what users pick instead (bench/bench.py).
# Not part of `make test`: numbers, not assertions. Writes bench/results.md; runs in bench/run.
BENCH_BIN   := bench/run/bin
BENCH_PROGS := $(BENCH_BIN)/floor $(BENCH_BIN)/multi_floor $(BENCH_BIN)/peak_rss \
               $(BENCH_BIN)/page_touch $(BENCH_BIN)/load
BENCH_CC    := $(CC) -std=c99 -D_DEFAULT_SOURCE -O2 -g $(WARN)

.PHONY: bench
# Only `make bench` needs these (the driver, callgrind, LuaSocket's HTTPS).
bench: DEB_PKGS += python3 valgrind lua-sec
bench: deps
	@$(MAKE) --no-print-directory build $(BENCH_PROGS)
	@$(MAKE) --no-print-directory build LUA=luajit   # the example in nginx runs LuaJIT
	LUA=$(LUA_BIN) BENCH_BUILD=$(BUILD) python3 bench/bench.py --write

$(BENCH_BIN)/floor $(BENCH_BIN)/multi_floor: $(BENCH_BIN)/%: bench/%.c bench/floor_common.c bench/floor_common.h
	@mkdir -p $(dir $@)
	$(BENCH_CC) -o $@ $< bench/floor_common.c $(shell pkg-config --cflags --libs libcurl)

$(BENCH_BIN)/peak_rss $(BENCH_BIN)/page_touch: $(BENCH_BIN)/%: bench/%.c
	@mkdir -p $(dir $@)
	$(BENCH_CC) -o $@ $<

$(BENCH_BIN)/load: bench/load.c
	@mkdir -p $(dir $@)
	$(BENCH_CC) -o $@ $< $(shell pkg-config --cflags --libs libcurl)
