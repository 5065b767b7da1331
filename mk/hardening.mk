# Hardening: sanitizers, valgrind, libFuzzer, allocation-failure torture, static analysis.
#   make asan       core built with ASan+UBSan (build/asan), whole spec suite, LeakSanitizer on
#   make valgrind   whole spec suite under memcheck (valgrind.supp: only what is not ours)
#   make fuzz       every libFuzzer harness in fuzz/ for FUZZ_SECONDS each (default 60)
#   make torture    fails the 1st, 2nd, ... nth allocation of scripted calls (fuzz/torture.c)
#   make lint       cppcheck and clang-tidy (.clang-tidy), warnings are errors, and deps-graph
#   make deps-graph the C files call each other one way only (mk/deps_graph.py: nm on each object)
# Each target that needs the simulator starts and stops it like `make check`.

DEB_PKGS += clang clang-tidy cppcheck valgrind libclang-rt-14-dev

.PHONY: asan valgrind fuzz fuzz-build torture lint deps-graph hardening

HARD_SAN    := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
HARD_INC     = -Isrc $(shell pkg-config --cflags lua5.4 libcurl libcrypto)
HARD_LIBS    = $(shell pkg-config --libs lua5.4 libcurl libcrypto) -lpthread -lm
HARD_CFLAGS  = -std=c99 -D_DEFAULT_SOURCE -g $(WARN) $(HARD_INC)
# abort_on_error=0 and exitcode: a finding fails the run with a report instead of a core dump.
HARD_ASAN_ENV = ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1 \
                LSAN_OPTIONS=report_objects=1 \
                UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# The interpreter is not built with ASan, so the runtime is preloaded; gcc's, since gcc builds the
# core. Programs the specs start inherit LD_PRELOAD: curl hangs with it (Debian 12), so a wrapper
# first on PATH runs the real curl without it.
asan: deps
	@mkdir -p build/asan/bin
	@printf '#!/bin/sh\nunset LD_PRELOAD\nexec /usr/bin/curl "$$@"\n' >build/asan/bin/curl
	@chmod +x build/asan/bin/curl
	@PATH="$(CURDIR)/build/asan/bin:$$PATH" $(MAKE) --no-print-directory check LUA=lua5.4 CC=gcc \
	  BUILD=build/asan OPT="-O1 -g" SAN="$(HARD_SAN)" \
	  BUSTED="env LD_PRELOAD=$$(gcc -print-file-name=libasan.so) $(HARD_ASAN_ENV) lua5.4 /usr/bin/busted"

HARD_VG := valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect \
           --errors-for-leak-kinds=definite,indirect --track-origins=yes --num-callers=30 \
           --suppressions=valgrind.supp --gen-suppressions=all

valgrind: deps
	@$(MAKE) --no-print-directory check LUA=lua5.4 BUSTED="$(HARD_VG) lua5.4 /usr/bin/busted"

# ---- libFuzzer (clang) ----
FUZZ_SECONDS ?= 60
FUZZ_HARNESSES := $(patsubst fuzz/fuzz_%.c,%,$(filter-out fuzz/fuzz_common.c,$(wildcard fuzz/fuzz_*.c)))
FUZZ_BINS := $(addprefix build/fuzz/fuzz_,$(FUZZ_HARNESSES))
FUZZ_FLAGS := -O1 -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

build/fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_common.c fuzz/fuzz.h $(SRC) $(HDR)
	@mkdir -p $(dir $@)
	clang $(HARD_CFLAGS) $(FUZZ_FLAGS) -Ifuzz -o $@ $< fuzz/fuzz_common.c $(SRC) $(HARD_LIBS)

fuzz-build: $(FUZZ_BINS)

# New inputs go to build/fuzz/corpus-<name>; the seeds in fuzz/corpus/<name> are only read.
fuzz: deps
	@$(MAKE) --no-print-directory fuzz-build
	@set -e; for h in $(FUZZ_HARNESSES); do \
	  mkdir -p build/fuzz/corpus-$$h build/fuzz/crashes; \
	  echo "== fuzz_$$h: $(FUZZ_SECONDS) s"; \
	  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  build/fuzz/fuzz_$$h -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -max_len=65536 -print_final_stats=1 -artifact_prefix=build/fuzz/crashes/$$h- \
	    $$( [ -f fuzz/$$h.dict ] && echo -dict=fuzz/$$h.dict ) \
	    build/fuzz/corpus-$$h fuzz/corpus/$$h 2>build/fuzz/$$h.log || { tail -60 build/fuzz/$$h.log; exit 1; }; \
	  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' build/fuzz/$$h.log; \
	done

# ---- allocation-failure torture (gcc + ASan/LSan; our own malloc wrapped at link time) ----
TORTURE_BIN := build/torture/torture
$(TORTURE_BIN): fuzz/torture.c $(SRC) $(HDR)
	@mkdir -p $(dir $@)
	gcc $(HARD_CFLAGS) -O1 $(HARD_SAN) -o $@ fuzz/torture.c $(SRC) $(HARD_LIBS) \
	  -Wl,--wrap=malloc,--wrap=realloc,--wrap=calloc,--wrap=free

# Four passes: HTTP and HTTPS, each with the simulator's own answer (401: unknown token, so
# kind api) and with a success answer (a respond fault on every request). Over HTTPS libcurl's
# own allocations are not failed: libcurl 7.88.1 double-frees in its TLS session cache then.
TORTURE_OK := {"type":"respond","status":200,"count":-1,"body":"{\"data\":{\"task_id\":\"RM_0123456789abcdef0123456789abcdef\",\"cmd_jobs\":[{\"instance_id\":\"tort0001\",\"job_id\":\"0123456789abcdef0123456789abcdef\"}]},\"error_code\":\"0\",\"error_msg\":\"ok\"}"}
torture: deps
	@$(MAKE) --no-print-directory $(TORTURE_BIN)
	@$(SIMCTL) start >/dev/null
	@eval "$$($(SIMCTL) env)"; set -e; trap '$(SIMCTL) stop >/dev/null' EXIT; \
	for scheme in http https; do \
	  curl -sf -X POST "$$KOOPHONE_SIM_URL/_sim/reset" >/dev/null; \
	  echo "== torture over $$scheme, error answers"; \
	  curl_fails=1; [ $$scheme = http ] || curl_fails=0; \
	  TORTURE_CURL=$$curl_fails TORTURE_SCHEME=$$scheme $(HARD_ASAN_ENV) $(TORTURE_BIN) fuzz/torture.lua; \
	  curl -sf "$$KOOPHONE_SIM_URL/_sim/faults" -d '$(TORTURE_OK)' >/dev/null; \
	  echo "== torture over $$scheme, success answers"; \
	  TORTURE_CURL=$$curl_fails TORTURE_SCHEME=$$scheme $(HARD_ASAN_ENV) $(TORTURE_BIN) fuzz/torture.lua; \
	done

# ---- static analysis ----
# cppcheck reads only our files (system headers: its own knowledge of libc, plus the Lua and
# libcurl declarations it can find); clang-tidy checks with the real headers. variableScope is
# off: the code declares its variables at the top of a block on purpose (one place to read).
lint: deps deps-graph
	cppcheck --std=c99 --enable=warning,style,performance,portability --error-exitcode=1 \
	  --inline-suppr --quiet --suppress=missingIncludeSystem --suppress=missingInclude \
	  --suppress=variableScope --library=posix -Isrc src fuzz
	clang-tidy --quiet $(SRC) fuzz/*.c -- $(HARD_CFLAGS) -Ifuzz

hardening: asan fuzz torture lint

# Which file defines and which uses each kp_* symbol (nm on one object per file): fails on a call
# cycle between C files, on a kp.h section out of pipeline order, and on an include other than
# kp.h (so there is one header chain and no include cycle).
deps-graph:
	@python3 mk/deps_graph.py $(CC) $(CFLAGS_ALL)
