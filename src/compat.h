/* Lua 5.1, LuaJIT 2.1, 5.2, 5.3 and 5.4 differences, kept out of the logic files.
 *
 * The logic files are written against the 5.3/5.4 API; this header supplies
 * what an older ABI lacks. LuaJIT 2.1 reports 5.1 but already declares some
 * 5.2 functions (luaL_setfuncs, luaL_testudata), so the shims carry names of
 * their own and the standard names are macros: the same code builds whether
 * or not the headers declare them. */
#ifndef KP_COMPAT_H
#define KP_COMPAT_H

#include "lua.h"
#include "lauxlib.h"

#if !defined(LUA_VERSION_NUM) || LUA_VERSION_NUM < 502
#define lua_rawlen(L, i) lua_objlen((L), (i))
#define lua_absindex(L, i) \
  (((i) > 0 || (i) <= LUA_REGISTRYINDEX) ? (i) : lua_gettop(L) + (i) + 1)
#define luaL_setfuncs kp_compat_setfuncs
#define luaL_testudata kp_compat_testudata

static inline void kp_compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
  luaL_checkstack(L, nup + 1, "too many upvalues");
  for (; l->name != NULL; l++) {
    int i;
    for (i = 0; i < nup; i++)
      lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}

static inline void *kp_compat_testudata(lua_State *L, int ud, const char *tname)
{
  void *p = lua_touserdata(L, ud);
  if (p == NULL || !lua_getmetatable(L, ud))
    return NULL;
  luaL_getmetatable(L, tname);
  if (!lua_rawequal(L, -1, -2))
    p = NULL;
  lua_pop(L, 2);
  return p;
}
#endif

#if !defined(LUA_VERSION_NUM) || LUA_VERSION_NUM < 503
/* Before 5.3 every number is a float; callers then take the float path. */
#define lua_isinteger(L, i) 0
#endif

#endif
