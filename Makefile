# koophone: build, demo and test on Debian 12.
#   make demo    installs what is missing, builds, runs examples/unassign.lua against the simulator
#   make test    installs what is missing, builds, starts the simulator, runs every spec on
#                lua5.4 and LuaJIT (make test-all: on all five runtimes)
# LUA selects the runtime (lua5.4 by default); see mk/runtimes.mk for the others.

LUA        ?= lua5.4
BUILD      := build/$(LUA)
CORE       := $(BUILD)/koophone/core.so
SRC        := $(wildcard src/*.c)
HDR        := $(wildcard src/*.h)

# pkg-config name and interpreter of each runtime
LUA_PC_lua5.1 := lua5.1
LUA_PC_lua5.2 := lua5.2
LUA_PC_lua5.3 := lua5.3
LUA_PC_lua5.4 := lua5.4
LUA_PC_luajit := luajit
LUA_PC     := $(LUA_PC_$(LUA))
LUA_BIN_luajit := luajit
LUA_BIN    := $(or $(LUA_BIN_$(LUA)),$(LUA))

CC         ?= cc
OPT        ?= -O2 -g
WARN       := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS_ALL  = -std=c99 -D_DEFAULT_SOURCE -fPIC $(OPT) $(WARN) $(SAN) $(CFLAGS) \
              $(shell pkg-config --cflags $(LUA_PC) libcurl libcrypto)
LDFLAGS_ALL = -shared $(SAN) $(LDFLAGS)
LDLIBS_ALL  = $(shell pkg-config --libs libcurl libcrypto) -lpthread

BUSTED     := $(LUA_BIN) /usr/bin/busted
SIMCTL     := sim/simctl
SPECS      ?= spec

# Debian packages the build, the simulator and the specs need (make deps installs the missing ones)
DEB_PKGS   := gcc make pkg-config ca-certificates openssl curl \
              lua5.4 liblua5.4-dev libcurl4-openssl-dev libssl-dev lua-cjson lua-busted lua-socket luarocks \
              nginx-light libnginx-mod-http-lua
# mk/*.mk fragments add their own packages with DEB_PKGS += ...

.PHONY: openresty-example all build deps demo test check check-one sim-start sim-stop install clean

all: build
build: $(CORE)

$(CORE): $(SRC) $(HDR) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $(SRC) $(LDLIBS_ALL)

deps:
	@missing=$$(for p in $(DEB_PKGS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: deps
	@$(MAKE) --no-print-directory build
	@$(SIMCTL) start --seed sim/seed-demo.json
	@eval "$$($(SIMCTL) env)"; \
	  export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="$(BUILD)/?.so;;"; \
	  $(LUA_BIN) examples/unassign.lua --demo && \
	  echo "== bin/koophone unassign --input examples/bulk-demo.csv (the same tenant; u-1001 is done already)" && \
	  KOOPHONE_TOKEN="$$(sed -n 's/.*"token": "\([^"]*\)".*/\1/p' sim/seed-demo.json)" \
	  $(LUA_BIN) bin/koophone unassign --input examples/bulk-demo.csv --yes --output-format jsonl --batch-size 5 \
	    --endpoint "$$KOOPHONE_SIM_HTTPS_URL" --cafile "$$KOOPHONE_SIM_CA"; rc=$$?; \
	  $(SIMCTL) stop >/dev/null; exit $$rc

# Runs the specs against a freshly started simulator and stops it whatever the outcome.
test: deps
	@$(MAKE) --no-print-directory check

# The runtimes check covers: lua5.4 and LuaJIT, or only LUA when it is given (make check LUA=lua5.1).
CHECK_LUAS ?= $(if $(filter command line environment,$(origin LUA)),$(LUA),lua5.4 luajit)

check:
	@$(SIMCTL) start >/dev/null
	@rc=0; for l in $(CHECK_LUAS); do \
	  echo "== specs on $$l"; $(MAKE) --no-print-directory check-one LUA=$$l || rc=1; done; \
	  $(SIMCTL) stop >/dev/null; exit $$rc

# One runtime: its build and the specs, against the simulator that check started.
check-one: build
	@eval "$$($(SIMCTL) env)"; KOOPHONE_LUA=$(LUA_BIN) KOOPHONE_BUILD=$(BUILD) \
	  $(BUSTED) --cpath="$(BUILD)/?.so" $(BUSTED_FLAGS) $(SPECS)

# examples/openresty in nginx on a free port against the simulator (docs/openresty.md)
openresty-example: deps
	@$(MAKE) --no-print-directory build LUA=luajit
	@examples/openresty/try.sh

sim-start:
	@$(SIMCTL) start --seed sim/seed-demo.json
sim-stop:
	@$(SIMCTL) stop

install:
	luarocks --lua-version=5.4 make --deps-mode=none koophone-scm-1.rockspec

clean:
	rm -rf build sim/run bench/run .tmp

-include $(wildcard mk/*.mk)
