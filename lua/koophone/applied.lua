-- THE rule for "may this unassign have been applied", the one place that decides it. The retry
-- policy (koophone.retry), koophone.client, the token renewal (koophone.ngx) and the bulk run
-- (koophone.run) read it; the C core only records the facts each outcome carries:
--   sent       false: the request certainly never reached the server
--   attempts   copies of the request that went out
--   resends    of those, copies libcurl sent again by itself after a copy went unanswered (a
--              reused keep-alive connection closed under it): the unanswered one may have been
--              applied
--   renewed    true: the gateway refused the token of a first copy (401 APIGW.0301/0307, before
--              KooPhone saw it: nothing applied) and the request went once more with a new one;
--              that copy is in attempts, never in resends
-- and the answer itself, which koophone.classify reads.
--
-- The cases, in order (spec/applied_spec.lua has them as a table):
--   not sent (sent == false)                                  not applied
--   resends > 0                                               may have been applied
--   no complete answer (timeout, reset, truncated, cut by a cancel), a 5xx, an unreadable 2xx
--                                                             may have been applied
--   any other answer: throttled, unavailable, 401 before KooPhone, a 4xx or API error (2210 too)
--                                                             not applied by this copy
-- And what a KOOPHONE.API.2210 means after them (not_found): with no earlier copy that may have
-- been applied, the pair is not bound; after one, for a request of one pair, that copy removed
-- the binding (assumed_unassigned); for a request of several pairs it proves nothing (the 2210 may
-- concern any one of them, and the earlier copy may have been applied or refused as a whole).
local classify = require("koophone.classify").classify
local outcomes = require "koophone.outcomes"

local _M = {}

_M.NOTE = "the request may have been applied: check the bindings before sending it again"

-- koophone.classify's reasons for an answer after which the request may have been applied
-- (an interrupted one that was sent: a transfer a cancel handle cut, CANCELLED)
local MAYBE = { no_answer = true, server_error = true, bad_response = true, interrupted = true }

-- resent(got) -> the copies of the request (res or err of one call) that libcurl sent again
-- after an unanswered one: each counts as a retry after an ambiguous failure.
function _M.resent(got)
  if got.sent == false then return 0 end
  return got.resends or 0
end

-- attempt(err) -> maybe, why: whether the call that failed with err may have been applied by
-- one of its copies; why: "not_sent", "resent", or koophone.classify's reason.
function _M.attempt(err)
  if err.sent == false then return false, "not_sent" end
  if _M.resent(err) > 0 then return true, "resent" end
  local _, why = classify(err)
  return MAYBE[why] == true, why
end

-- clean(err, state) -> true when certainly nothing of the call was applied: not by the copies
-- err answers, not by an earlier attempt (state: a koophone.retry state, or nil), and err does
-- not say otherwise (the core's own maybe_applied).
function _M.clean(err, state)
  return not (_M.attempt(err) or err.maybe_applied or (state and state.maybe_applied))
end

-- row(e) -> true when the pairs of a bulk run's row, its outcome set, may have been unassigned
-- although the outcome is not final: `unconfirmed`, or `failed` after a request that may have
-- been applied (err.maybe_applied), or after one of an earlier attempt or run (e.tainted, or
-- e.maybe_applied that koophone.run, koophone.settle set) that the last answer does not settle.
-- The journal, the settling read and the CLI's count and output all ask this.
function _M.row(e)
  if outcomes.final[e.outcome] then return false end
  local err = e.err
  return (outcomes.maybe_applied[e.outcome] or e.tainted or e.maybe_applied
          or (err and err.maybe_applied)) and true or false
end

-- not_found(earlier, pairs) -> the outcome of a KOOPHONE.API.2210 for a request of `pairs` pairs
-- (nil: unknown), earlier: whether a copy before it may have been applied.
-- "not_bound", "assumed_unassigned", or "unconfirmed" (no proof: may have been applied).
function _M.not_found(earlier, pairs)
  if not earlier then return "not_bound" end
  if pairs == 1 then return "assumed_unassigned" end
  return "unconfirmed"
end

-- not_proof(code, pairs) -> the note of an "unconfirmed" 2210 (the C core says the same words
-- for its own case: KP_NOT_PROOF in src/response.c).
function _M.not_proof(code, pairs)
  return ("%s after a copy that may have been applied is no proof for a request of %s pairs: any of "
          .. "them may have been unassigned; check the bindings before sending it again")
         :format(code, pairs and tostring(pairs) or "several")
end

-- renewed(first, out) -> out: the outcome of the copy sent again with a new token after the
-- gateway refused the token of `first` (an err), counting both copies (koophone.ngx does here
-- what src/call.c does for the core).
function _M.renewed(first, out)
  out.attempts = (first.attempts or 1) + (out.attempts or 0)
  out.resends = (first.resends or 0) + (out.resends or 0)
  out.renewed = true
  return out
end

return _M
