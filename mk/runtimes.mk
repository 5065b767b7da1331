# Runtimes: one source for Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT 2.1 (Debian's luajit2, the
# OpenResty branch); the differences live in src/compat.h.
#   make build LUA=lua5.1|lua5.2|lua5.3|lua5.4|luajit   the core for that runtime, in build/$(LUA)
#   make check LUA=...      the specs on that runtime only (plain make check: lua5.4 and luajit)
#   make test-all           installs what is missing, then the specs on all five runtimes
#   make build-all          the core for all five

ALL_LUAS := lua5.1 lua5.2 lua5.3 lua5.4 luajit

# lua-cjson, lua-socket and busted's dependencies ship modules for every one of these.
DEB_PKGS += lua5.1 liblua5.1-0-dev lua5.2 liblua5.2-dev lua5.3 liblua5.3-dev \
            luajit2 libluajit2-5.1-dev

.PHONY: test-all build-all

test-all: deps
	@$(MAKE) --no-print-directory check CHECK_LUAS="$(ALL_LUAS)"

build-all:
	@for l in $(ALL_LUAS); do $(MAKE) --no-print-directory build LUA=$$l || exit 1; done
