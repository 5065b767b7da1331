/* The bulk journal's file (core.jfile), the identity of a bulk run's input
 * (core.file_digest), and the CLI's files (core.file_id, core.private_file),
 * for koophone.journal and bin/koophone.
 *
 * Plain Lua can neither lock a file nor bring it to the disk. The journal
 * needs both: a lock, so that two runs never share one journal (each would
 * send every pair and read the other's work as "not bound"); and fsync, so
 * that a batch's records survive a power cut before the next batch leaves.
 * flock(2) is released by the kernel when the process dies, so a crash never
 * leaves a journal locked.
 *
 * A lock on the open file alone follows the file, not its name: with the
 * journal moved away during a run, a second run on the old name would find
 * no lock. So the name is locked too: "<journal>.lock" beside it, created
 * when missing, flocked, and removed when the journal is closed by the run
 * that created it (a file that was there before is left as it was). A lock
 * file that a crash left behind holds no flock and blocks nothing. The lock
 * file that exists and that we may only read is opened read-only: flock
 * needs no more, so such a leftover of another user does not stop a run.
 *
 * Files created here are 0600 whatever the umask: they hold a tenant's ids
 * and request ids. A file that exists keeps its mode (it is the owner's). */
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

#define LOCK_SUFFIX ".lock"
#define LOCK_TRIES 8 /* renewed lock files in a row before giving up */

typedef struct kp_jfile {
  int fd; /* -1 once closed */
  int lock_fd; /* <path>.lock, flocked; -1 once closed */
  int lock_made; /* 1 when this run created <path>.lock: it removes it */
  char *lock_path; /* inside path[]'s allocation, after the journal's name */
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

/* 1 when the lock file's name still names the file locked on fd */
static int same_file(const char *path, int fd)
{
  struct stat held, named;
  return fstat(fd, &held) == 0 && stat(path, &named) == 0 && named.st_dev == held.st_dev
         && named.st_ino == held.st_ino;
}

/* Takes <path>.lock: 0, EWOULDBLOCK when another run holds it, EBUSY when
 * the file kept being replaced (LOCK_TRIES times), or another errno value.
 * A run that ends removes the lock file it made; one that opened the file
 * just before it went may lock a name that is gone: it then starts again
 * with the file that now has the name. */
static int lock_name(kp_jfile *j)
{
  int tries;
  for (tries = 0; tries < LOCK_TRIES; tries++) {
    j->lock_made = 1;
    j->lock_fd = open(j->lock_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (j->lock_fd < 0 && errno == EEXIST) {
      j->lock_made = 0;
      j->lock_fd = open(j->lock_path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
      if (j->lock_fd < 0 && errno == EACCES) /* flock needs no more than reading, but NFS's
                                                emulation wants a writable file when it can */
        j->lock_fd = open(j->lock_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (j->lock_fd < 0 && errno == ENOENT)
        continue; /* removed by the run that made it, meanwhile */
    }
    if (j->lock_fd < 0)
      return errno;
    if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
      int err = errno;
      close(j->lock_fd); /* not release(): the name may be another run's */
      j->lock_fd = -1;
      return err;
    }
    if (same_file(j->lock_path, j->lock_fd))
      return 0;
    close(j->lock_fd);
    j->lock_fd = -1;
  }
  return EBUSY;
}

/* Closes both files; the lock file's name goes first, while it is still
 * locked, so that no other run can hold it meanwhile: only the file this
 * run made, and only while the name is still that file's. */
static void release(kp_jfile *j)
{
  if (j->fd >= 0)
    close(j->fd);
  if (j->lock_fd >= 0) {
    if (j->lock_made && same_file(j->lock_path, j->lock_fd))
      unlink(j->lock_path);
    close(j->lock_fd);
  }
  j->fd = j->lock_fd = -1;
}

/* nil, "journal <path> is in use by another run" or the failure of what */
static int not_locked(lua_State *L, kp_jfile *j, const char *what, int err)
{
  release(j);
  if (err != EWOULDBLOCK && err != EBUSY)
    return failure(L, j->path, what, err);
  lua_pushnil(L);
  if (err == EWOULDBLOCK)
    lua_pushfstring(L, "journal %s is in use by another run (it is locked)", j->path);
  else
    lua_pushfstring(L, "journal %s: its " LOCK_SUFFIX " file was replaced %d times in a row "
                    "while being locked (runs starting and ending on it): try again", j->path,
                    LOCK_TRIES);
  return 2;
}

/* core.jfile(path) -> jfile, or nil, message: locks path's name (see above),
 * then opens path for appending (created 0600 when missing, its directory
 * then synced) and locks the file; a journal that another process holds is
 * refused at once. */
static int jfile_open(lua_State *L)
{
  size_t len;
  const char *path = check_path(L, 1, &len);
  kp_jfile *j = lua_newuserdata(L, sizeof *j + 2 * len + sizeof LOCK_SUFFIX + 1);
  int err, ud = lua_gettop(L), created = 1;
  struct stat st;
  j->fd = j->lock_fd = -1;
  j->lock_made = 0;
  memcpy(j->path, path, len + 1);
  j->lock_path = j->path + len + 1;
  memcpy(j->lock_path, path, len);
  memcpy(j->lock_path + len, LOCK_SUFFIX, sizeof LOCK_SUFFIX);
  luaL_getmetatable(L, KP_JFILE_MT);
  lua_setmetatable(L, -2); /* from here __gc closes what is opened */
  /* a name that is no regular file (/dev/null) gets no lock file beside it: not in /dev */
  if ((stat(path, &st) != 0 || S_ISREG(st.st_mode)) && (err = lock_name(j)) != 0)
    return not_locked(L, j, "cannot lock its " LOCK_SUFFIX " file", err);
  j->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
  if (j->fd < 0 && errno == EEXIST) {
    created = 0;
    j->fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
  }
  if (j->fd < 0)
    return not_locked(L, j, "cannot open", errno);
  if (created && (err = sync_dir(L, path)) != 0)
    return not_locked(L, j, "fsync of its directory", err);
  lua_settop(L, ud);
  if (flock(j->fd, LOCK_EX | LOCK_NB) != 0)
    return not_locked(L, j, "cannot lock", errno);
  return 1;
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

/* jfile:close(): releases the locks and removes the lock file; idempotent
 * (also __gc and __close). */
static int jfile_close(lua_State *L)
{
  release(luaL_checkudata(L, 1, KP_JFILE_MT));
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
  int fd = -1;
  /* stat first: opening a FIFO would wait for a writer, or take and drop
   * what one wrote */
  if (stat(path, &st) != 0)
    return unreadable(L, fd, path);
  if (S_ISREG(st.st_mode) && ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st) != 0))
    return unreadable(L, fd, path);
  if (!S_ISREG(st.st_mode)) {
    if (fd >= 0)
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

/* core.file_id(path) -> "<device>:<inode>", whether it is a regular file;
 * or nil, message (a path that does not exist has no identity). Two names
 * of one file (a symlink, a hard link, /dev/stdin) give the same id. */
static int file_id(lua_State *L)
{
  size_t len;
  const char *path = check_path(L, 1, &len);
  struct stat st;
  char id[2 * 20 + 2];
  if (stat(path, &st) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  snprintf(id, sizeof id, "%llu:%llu", (unsigned long long)st.st_dev,
           (unsigned long long)st.st_ino);
  lua_pushstring(L, id);
  lua_pushboolean(L, S_ISREG(st.st_mode));
  return 2;
}

/* core.private_file(path) -> true when it created path (empty, mode 0600
 * whatever the umask), false when path exists; or nil, message. The caller
 * then opens it as it likes: what it writes stays the owner's. A symlink to
 * nothing is refused: O_EXCL does not follow it, the caller's open would,
 * and would create its target with the umask's mode. */
static int private_file(lua_State *L)
{
  size_t len;
  const char *path = check_path(L, 1, &len);
  struct stat st;
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
  if (fd < 0 && errno == EEXIST && stat(path, &st) != 0 && errno == ENOENT) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: a symbolic link to a file that does not exist: refused (its target "
                    "would not be created private); create the target or give its path", path);
    return 2;
  }
  if (fd < 0 && errno == EEXIST) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (fd < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  close(fd);
  lua_pushboolean(L, 1);
  return 1;
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
    { "file_id", file_id },
    { "private_file", private_file },
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
