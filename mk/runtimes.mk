# Runtimes: one source for Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT 2.1 (Debian's luajit2, the
# OpenResty branch); the differences live in src/compat.h.
#   make build LUA=lua5.1|lua5.2|lua5.3|lua5.4|luajit   the core for that runtime, in build/$(LUA)
#   make check LUA=...      the specs on that runtime only (plain make check: lua5.4 and luajit)
#   make test-all           installs what is missing, then the specs on all five runtimes
#   make build-all          the core for all five
#   make embed [LUA=...]    examples/embed's host program, dynamic and static, in $(BUILD)/embed

ALL_LUAS := lua5.1 lua5.2 lua5.3 lua5.4 luajit

# lua-cjson, lua-socket and busted's dependencies ship modules for every one of these.
DEB_PKGS += lua5.1 liblua5.1-0-dev lua5.2 liblua5.2-dev lua5.3 liblua5.3-dev \
            luajit2 libluajit2-5.1-dev

.PHONY: test-all build-all embed

test-all: deps
	@$(MAKE) --no-print-directory check CHECK_LUAS="$(ALL_LUAS)"

build-all:
	@for l in $(ALL_LUAS); do $(MAKE) --no-print-directory build LUA=$$l || exit 1; done

# ---- examples/embed: a C host that embeds $(LUA) and loads koophone from this tree ----
EMBED        := $(BUILD)/embed
EMBED_CFLAGS  = -std=c99 -D_DEFAULT_SOURCE $(OPT) $(WARN) $(SAN) $(CFLAGS) \
                -DKP_LUA_DIR='"$(CURDIR)/lua"' -DKP_CORE_DIR='"$(abspath $(BUILD))"' \
                $(shell pkg-config --cflags $(LUA_PC) libcurl libcrypto)
EMBED_LIBS    = $(shell pkg-config --libs $(LUA_PC)) -lm -ldl -pthread

embed: $(CORE) $(EMBED)/admin_console $(EMBED)/admin_console_static

# koophone/core.so from $(BUILD), loaded by require through package.cpath
$(EMBED)/admin_console: examples/embed/admin_console.c mk/runtimes.mk
	@mkdir -p $(dir $@)
	$(CC) $(EMBED_CFLAGS) -o $@ $< $(EMBED_LIBS)

# the core linked in and put in package.preload
$(EMBED)/admin_console_static: examples/embed/admin_console.c $(SRC) $(HDR) mk/runtimes.mk
	@mkdir -p $(dir $@)
	$(CC) $(EMBED_CFLAGS) -DKOOPHONE_STATIC -o $@ $< $(SRC) \
	  $(shell pkg-config --libs libcurl libcrypto) $(EMBED_LIBS)
