/* The bulk journal's file (core.jfile) and the identity of a bulk run's input
 * (core.file_digest), for koophone.journal.
 *
 * Plain Lua can neither lock a file nor bring it to the disk. The journal
 * needs both: a lock, so that two runs never share one journal (each would
 * send every pair and read the other's work as "not bound"); and fsync, so
 * that a batch's records survive a power cut before the next batch leaves.
 * flock(2) is released by the kernel when the process dies, so a crash never
 * leaves a journal locked. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kp.h"

#define KP_JFILE_MT "koophone.jfile"
#define DIGEST_CHUNK 16384

typedef struct kp_jfile {
  int fd; /* -1 once closed */
  char path[]; /* the name given, for messages */
} kp_jfile;

/* nil, "journal <path>: <what>: <strerror>" */
static int failure(lua_State *L, const char *path, const char *what, int err)
{
  lua_pushnil(L);
  lua_pushfstring(L, "journal %s: %s: %s", path, what, strerror(err));
  return 2;
}

static kp_jfile *check_open(lua_State *L)
{
  kp_jfile *j = luaL_checkudata(L, 1, KP_JFILE_MT);
  if (j->fd < 0)
    luaL_error(L, "koophone.jfile: the journal %s is closed", j->path);
  return j;
}

static const char *check_path(lua_State *L, int idx, size_t *len)
{
  const char *path = luaL_checklstring(L, idx, len);
  luaL_argcheck(L, *len > 0 && strlen(path) == *len, idx, "expected a file name without NUL");
  return path;
}

/* fsync of the directory that holds path, so that the name of a new journal
 * survives a power cut as well as its lines; 0, or an errno value. */
static int sync_dir(lua_State *L, const char *path)
{
  const char *slash = strrchr(path, '/'), *dir = ".";
  int fd, err = 0;
  if (slash == path) {
    dir = "/";
  } else if (slash != NULL) {
    lua_pushlstring(L, path, (size_t)(slash - path));
    dir = lua_tostring(L, -1);
  }
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0)
    err = errno;
  if (fd >= 0)
    close(fd);
  return err;
}

/* core.jfile(path) -> jfile, or nil, message: opens path for appending
 * (created when missing, its directory then synced) and locks it; a journal
 * that another process holds is refused at once. */
static int jfile_open(lua_State *L)
{
  size_t len;
  const char *path = check_path(L, 1, &len);
  kp_jfile *j = lua_newuserdata(L, sizeof *j + len + 1);
  int err, ud = lua_gettop(L), created = 1;
  j->fd = -1;
  memcpy(j->path, path, len + 1);
  luaL_getmetatable(L, KP_JFILE_MT);
  lua_setmetatable(L, -2); /* from here __gc closes what is opened */
  j->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0666);
  if (j->fd < 0 && errno == EEXIST) {
    created = 0;
    j->fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
  }
  if (j->fd < 0)
    return failure(L, path, "cannot open", errno);
  if (created && (err = sync_dir(L, path)) != 0)
    return failure(L, path, "fsync of its directory", err);
  lua_settop(L, ud);
  if (flock(j->fd, LOCK_EX | LOCK_NB) == 0)
    return 1;
  err = errno;
  close(j->fd);
  j->fd = -1;
  if (err == EWOULDBLOCK) {
    lua_pushnil(L);
    lua_pushfstring(L, "journal %s is in use by another run (it is locked)", path);
    return 2;
  }
  return failure(L, path, "cannot lock", err);
}

/* jfile:write(s) -> true, or nil, message: all of s, appended. */
static int jfile_write(lua_State *L)
{
  kp_jfile *j = check_open(L);
  size_t len, done = 0;
  const char *s = luaL_checklstring(L, 2, &len);
  while (done < len) {
    ssize_t n = write(j->fd, s + done, len - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return failure(L, j->path, "write", n < 0 ? errno : EIO);
    done += (size_t)n;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* jfile:sync() -> true, or nil, message: what was written is on the disk. */
static int jfile_sync(lua_State *L)
{
  kp_jfile *j = check_open(L);
  if (fsync(j->fd) != 0)
    return failure(L, j->path, "fsync", errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* jfile:truncate(size) -> true, or nil, message: drops a torn last line. */
static int jfile_truncate(lua_State *L)
{
  kp_jfile *j = check_open(L);
  lua_Integer size = luaL_checkinteger(L, 2);
  luaL_argcheck(L, size >= 0, 2, "expected a size >= 0");
  if (ftruncate(j->fd, (off_t)size) != 0)
    return failure(L, j->path, "truncate", errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* jfile:close(): releases the lock; idempotent (also __gc and __close). */
static int jfile_close(lua_State *L)
{
  kp_jfile *j = luaL_checkudata(L, 1, KP_JFILE_MT);
  if (j->fd >= 0)
    close(j->fd);
  j->fd = -1;
  return 0;
}

/* nil, "cannot read the input <path>: <strerror of errno>", with fd (if open) closed */
static int unreadable(lua_State *L, int fd, const char *path)
{
  int err = errno;
  if (fd >= 0)
    close(fd);
  lua_pushnil(L);
  lua_pushfstring(L, "cannot read the input %s: %s", path, strerror(err));
  return 2;
}

/* core.file_digest(path) -> size, "fnv1a64:<hex>"; false when path is not a
 * regular file (a pipe cannot be read twice); or nil, message. Streams the
 * file in chunks: a million-line input is never held in memory. FNV-1a: any
 * change of a byte changes it; it needs no library and runs at disk speed. */
static int file_digest(lua_State *L)
{
  size_t len;
  const char *path = check_path(L, 1, &len);
  unsigned char buf[DIGEST_CHUNK];
  uint64_t h = KP_FNV1A_BASIS, size = 0;
  struct stat st;
  char hex[sizeof "fnv1a64:" + 16];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) != 0)
    return unreadable(L, fd, path);
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    lua_pushboolean(L, 0);
    return 1;
  }
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return unreadable(L, fd, path);
    if (n == 0)
      break;
    h = kp_fnv1a(h, buf, (size_t)n);
    size += (uint64_t)n;
  }
  close(fd);
  snprintf(hex, sizeof hex, "fnv1a64:%016llx", (unsigned long long)h);
  lua_pushinteger(L, (lua_Integer)size);
  lua_pushstring(L, hex);
  return 2;
}

void kp_jfile_open(lua_State *L)
{
  static const luaL_Reg methods[] = {
    { "write", jfile_write },
    { "sync", jfile_sync },
    { "truncate", jfile_truncate },
    { "close", jfile_close },
    { "__gc", jfile_close },
    { "__close", jfile_close },
    { NULL, NULL }
  };
  static const luaL_Reg functions[] = {
    { "jfile", jfile_open },
    { "file_digest", file_digest },
    { NULL, NULL }
  };
  if (luaL_newmetatable(L, KP_JFILE_MT)) {
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index"); /* the metatable holds the methods */
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, functions, 0);
}
