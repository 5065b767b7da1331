/* core.row_entry(set, v, pos, row): the entry koophone.rows makes of one
 * input row of a bulk run.
 *
 * Inputs run to millions of rows, and each needs the same three steps:
 * check the pair, put it in the run's duplicate set, make its entry (the
 * table that ends as the row's result). One C call does them, where Lua
 * needed three calls and a table constructor per row. */
#include <stdio.h>

#include "kp.h"

/* Slots for every field koophone.bulk sets on a sent row (pos, row,
 * user_id, instance_id, outcome, request_id, task_id, job_id), so that the
 * entry never grows on the way. */
#define ENTRY_FIELDS 8

static void set_raw_field(lua_State *L, int entry, int v, const char *name)
{
  lua_getfield(L, v, name);
  lua_setfield(L, entry, name);
}

/* core.row_entry(set, v, pos, row) -> entry
 * { pos, row, user_id, instance_id } for a pair to send (an integer user_id
 * as its decimal string); with outcome "invalid" and reason when v is not a
 * valid pair (the ids as v holds them); with outcome "duplicate", reason
 * and duplicate_of (the first row) when the set holds the pair already. */
int kp_row_entry(lua_State *L)
{
  kp_pairset *set = kp_check_pairset(L, 1);
  lua_Integer row = luaL_checkinteger(L, 4);
  const char *u, *inst;
  size_t ul, il;
  uint64_t first;
  char reason[40];
  int entry, seen;
  luaL_checkany(L, 2);
  luaL_checkinteger(L, 3);
  luaL_argcheck(L, row >= 0, 4, "expected a row number >= 0");
  lua_settop(L, 4);
  lua_createtable(L, 0, ENTRY_FIELDS);
  entry = lua_gettop(L);
  lua_pushvalue(L, 3);
  lua_setfield(L, entry, "pos");
  lua_pushvalue(L, 4);
  lua_setfield(L, entry, "row");
  if (kp_pair_message(L, 2)) {
    lua_setfield(L, entry, "reason");
    if (lua_type(L, 2) == LUA_TTABLE) {
      set_raw_field(L, entry, 2, "user_id");
      set_raw_field(L, entry, 2, "instance_id");
    }
    lua_pushliteral(L, "invalid");
    lua_setfield(L, entry, "outcome");
    lua_settop(L, entry);
    return 1;
  }
  u = lua_tolstring(L, -2, &ul);       /* the checked ids: no NUL in them */
  inst = lua_tolstring(L, -1, &il);
  seen = kp_pairset_add(set, u, ul, inst, il, (uint64_t)row, &first);
  if (seen < 0)
    return luaL_error(L, "koophone.pairset: not enough memory");
  lua_setfield(L, entry, "instance_id");
  lua_setfield(L, entry, "user_id");
  if (seen) {
    lua_pushliteral(L, "duplicate");
    lua_setfield(L, entry, "outcome");
    snprintf(reason, sizeof reason, "repeats row %llu", (unsigned long long)first);
    lua_pushstring(L, reason);
    lua_setfield(L, entry, "reason");
    lua_pushinteger(L, (lua_Integer)first);
    lua_setfield(L, entry, "duplicate_of");
  }
  return 1;
}
