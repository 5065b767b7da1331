# Linking koophone into a C host (docs/embedding.md):
#   make embed [LUA=...]      in $(BUILD)/embed: libkoophone.a (the core and the Lua layer for that
#                             runtime), pkgconfig/koophone.pc pointing at it and include/, and
#                             examples/embed's host program, dynamic and static
#   make install-embed [PREFIX=/usr/local] [DESTDIR=]   koophone.h, libkoophone.a and koophone.pc
#                             into PREFIX/include, PREFIX/lib and PREFIX/lib/pkgconfig

PREFIX       ?= /usr/local
EMBED        := $(BUILD)/embed
EMBED_CFLAGS  = -std=c99 -D_DEFAULT_SOURCE $(OPT) $(WARN) $(SAN) $(CFLAGS) -Iinclude \
                $(shell pkg-config --cflags $(LUA_PC) libcurl libcrypto)
EMBED_LIBS    = $(shell pkg-config --libs $(LUA_PC)) -lm -ldl -pthread
LUA_MODULES  := $(sort $(wildcard lua/*.lua lua/koophone/*.lua lua/koophone/*/*.lua))
EMBED_OBJS   := $(patsubst src/%.c,$(EMBED)/obj/%.o,$(SRC)) $(EMBED)/obj/koophone_lua.o

# koophone.pc for prefix $(1) and library directory $(2) (the lib's Lua runtime is a Requires:
# koophone.h includes lua.h, and the library is built against that Lua's headers)
define koophone_pc
sed -e 's|@PREFIX@|$(1)|' -e 's|@LIBDIR@|$(2)|' -e 's|@LUA_PC@|$(LUA_PC)|' -e 's|@LUA@|$(LUA)|' \
  mk/koophone.pc.in
endef

.PHONY: embed install-embed

embed: $(CORE) $(EMBED)/admin_console $(EMBED)/admin_console_static

# koophone/core.so and lua/ found relative to the program (or $KOOPHONE_CORE_DIR, $KOOPHONE_LUA_DIR)
$(EMBED)/admin_console: examples/embed/admin_console.c mk/embed.mk
	@mkdir -p $(dir $@)
	$(CC) $(EMBED_CFLAGS) -o $@ $< $(EMBED_LIBS)

# the Lua layer as C string literals, for the static host
$(EMBED)/koophone_lua.c: examples/embed/lua2c.lua $(LUA_MODULES)
	@mkdir -p $(dir $@)
	$(LUA_BIN) examples/embed/lua2c.lua $@ $(LUA_MODULES)

$(EMBED)/obj/%.o: src/%.c $(HDR) mk/embed.mk
	@mkdir -p $(dir $@)
	$(CC) $(EMBED_CFLAGS) -c -o $@ $<

$(EMBED)/obj/koophone_lua.o: $(EMBED)/koophone_lua.c include/koophone.h mk/embed.mk
	@mkdir -p $(dir $@)
	$(CC) $(EMBED_CFLAGS) -c -o $@ $<

$(EMBED)/libkoophone.a: $(EMBED_OBJS)
	rm -f $@
	$(AR) rcs $@ $^

$(EMBED)/pkgconfig/koophone.pc: mk/koophone.pc.in mk/embed.mk
	@mkdir -p $(dir $@)
	$(call koophone_pc,$(CURDIR),$(CURDIR)/$(EMBED)) >$@

# the core and the Lua layer linked in and put in package.preload: no koophone file on the disk;
# compiled the way docs/embedding.md shows, through koophone.pc
$(EMBED)/admin_console_static: examples/embed/admin_console.c $(EMBED)/libkoophone.a \
                               $(EMBED)/pkgconfig/koophone.pc include/koophone.h
	$(CC) $(EMBED_CFLAGS) -DKOOPHONE_STATIC -o $@ $< \
	  $$(PKG_CONFIG_PATH=$(EMBED)/pkgconfig pkg-config --cflags --libs koophone) $(EMBED_LIBS)

install-embed: $(EMBED)/libkoophone.a mk/koophone.pc.in
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/koophone.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(EMBED)/libkoophone.a $(DESTDIR)$(PREFIX)/lib/
	$(call koophone_pc,$(PREFIX),$${prefix}/lib) >$(DESTDIR)$(PREFIX)/lib/pkgconfig/koophone.pc
