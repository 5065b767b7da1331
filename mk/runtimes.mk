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

# ---- examples/embed: a C host that embeds $(LUA) and runs koophone (docs/embedding.md) ----
EMBED        := $(BUILD)/embed
EMBED_CFLAGS  = -std=c99 -D_DEFAULT_SOURCE $(OPT) $(WARN) $(SAN) $(CFLAGS) -Iinclude \
                $(shell pkg-config --cflags $(LUA_PC) libcurl libcrypto)
EMBED_LIBS    = $(shell pkg-config --libs $(LUA_PC)) -lm -ldl -pthread
LUA_MODULES  := $(sort $(wildcard lua/*.lua lua/koophone/*.lua lua/koophone/*/*.lua))

embed: $(CORE) $(EMBED)/admin_console $(EMBED)/admin_console_static

# koophone/core.so and lua/ found relative to the program (or $KOOPHONE_CORE_DIR, $KOOPHONE_LUA_DIR)
$(EMBED)/admin_console: examples/embed/admin_console.c mk/runtimes.mk
	@mkdir -p $(dir $@)
	$(CC) $(EMBED_CFLAGS) -o $@ $< $(EMBED_LIBS)

# the Lua layer as C string literals, for the static host
$(EMBED)/koophone_lua.c: examples/embed/lua2c.lua $(LUA_MODULES)
	@mkdir -p $(dir $@)
	$(LUA_BIN) examples/embed/lua2c.lua $@ $(LUA_MODULES)

# the core and the Lua layer linked in and put in package.preload: no koophone file on the disk
$(EMBED)/admin_console_static: examples/embed/admin_console.c $(EMBED)/koophone_lua.c $(SRC) $(HDR) \
                               include/koophone.h mk/runtimes.mk
	$(CC) $(EMBED_CFLAGS) -DKOOPHONE_STATIC -o $@ $< $(EMBED)/koophone_lua.c $(SRC) \
	  $(shell pkg-config --libs libcurl libcrypto) $(EMBED_LIBS)
