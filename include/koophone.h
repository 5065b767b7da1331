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

/* Cancels the calls given a koophone.cancel_handle ({ cancel = c }): handle is c:pointer(), valid
 * while c is alive (keep a reference to it). From any thread, or a signal handler (a lock-free
 * store): a sleep of the call wakes within 50 ms, a transfer stops within 20 ms, and the call
 * returns nil, err (kind "interrupted", code "CANCELLED"). Inline, so that a host that loads
 * koophone/core.so can call it too. */
static inline void koophone_cancel(void *handle)
{
#if defined(__GNUC__) || defined(__clang__)
  __atomic_store_n((int *)handle, 1, __ATOMIC_RELEASE);
#else
  *(volatile int *)handle = 1;
#endif
}

#ifdef __cplusplus
}
#endif

#endif
