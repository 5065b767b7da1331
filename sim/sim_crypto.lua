-- KooPhone simulator: SHA-256 and HMAC-SHA256 from OpenSSL's libcrypto through the LuaJIT FFI.
-- Inside nginx the symbols are already loaded (nginx links libcrypto); a plain `luajit` loads
-- the library itself, so the module also works outside nginx.
local ffi = require "ffi"

ffi.cdef [[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md, unsigned int *md_len);
]]

local function load()
  if pcall(function() return ffi.C.HMAC end) then return ffi.C end
  for _, name in ipairs({ "crypto", "libcrypto.so.3", "libcrypto.so.1.1" }) do
    local ok, lib = pcall(ffi.load, name)
    if ok then return lib end
  end
  error("sim_crypto: libcrypto not found")
end

local C = load()
local md = ffi.new("unsigned char[32]")
local md_len = ffi.new("unsigned int[1]")

local M = {}

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end
M.hex = hex

-- Lower-case hex SHA-256 of the string s.
function M.sha256_hex(s)
  C.SHA256(s, #s, md)
  return hex(ffi.string(md, 32))
end

-- Lower-case hex HMAC-SHA256 of msg with key (bytes as they are).
function M.hmac_sha256_hex(key, msg)
  assert(C.HMAC(C.EVP_sha256(), key, #key, msg, #msg, md, md_len) ~= nil, "HMAC failed")
  return hex(ffi.string(md, md_len[0]))
end

return M
