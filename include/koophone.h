/* koophone.h: for C and C++ hosts that link the koophone core into their program instead of
 * loading koophone/core.so (see docs/embedding.md). */
#ifndef KOOPHONE_H
#define KOOPHONE_H

#include "lua.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The C core: what require "koophone.core" loads. Register it before any script runs, e.g. as
 * package.preload["koophone.core"] (every Lua from 5.1 on). It requires "cjson.safe". */
LUALIB_API int luaopen_koophone_core(lua_State *L);

/* The Lua layer (require "koophone" and koophone.*) from memory: a lua_CFunction that puts every
 * module in package.preload, raising only when out of memory. Defined by the C file
 * examples/embed/lua2c.lua generates from lua/ (make embed builds it); link that file too. */
int koophone_preload_lua(lua_State *L);

#ifdef __cplusplus
}
#endif

#endif
