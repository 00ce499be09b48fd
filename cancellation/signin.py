"""Sign-in throttling that slows an attacker down without letting strangers lock staff out.

Kept in Redis (shared by every web process), decided and counted in one Lua script, so that
concurrent guesses can never check more passwords than the limits allow: an attempt is counted
*before* its password is looked at, and a success takes its count back.

Three layers, after OWASP's "Slow Down Online Guessing Attacks with Device Cookies":

- **source** — one account from one address (or from one known device): after `free` failures
  each further attempt waits twice as long as the one before (1 s, 2 s, 4 s, … up to
  `max_delay`);
- **unrecognised clients** — failures on one account from browsers that have never signed in to
  it, and failures from one address, each lock *unrecognised* clients out for the window;
- **known devices** — a browser that signed in to the account before carries a signed device
  cookie: the account's and the address's lockouts do not apply to it (so strangers guessing
  can never lock the real user out of their own till), but its own failures are counted and
  lock that device alone.

A success clears its source's delay and takes back only its own attempt's counts: the real user
signing in does not reset the account's count of strangers' failures.
"""
import hashlib
from dataclasses import dataclass

SCOPES_MESSAGE = {
    "account": "for this account from unrecognised devices",
    "address": "from your network address",
    "device": "on this device",
}

# KEYS: source count, source next-allowed (ms), account count, address count, device count.
# ARGV: (unused), window (s), free, max delay (ms), account, address and device limits, trusted.
# The clock is Redis's, the same for every web process.
_ATTEMPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window = tonumber(ARGV[2])
local trusted = ARGV[8] == '1'
local function count(key) return tonumber(redis.call('GET', key) or '0') end
local function ttl(key)
  local left = redis.call('TTL', key)
  if left < 1 then return window end
  return left
end
if trusted then
  if count(KEYS[5]) >= tonumber(ARGV[7]) then return {'device', ttl(KEYS[5])} end
else
  if count(KEYS[3]) >= tonumber(ARGV[5]) then return {'account', ttl(KEYS[3])} end
  if count(KEYS[4]) >= tonumber(ARGV[6]) then return {'address', ttl(KEYS[4])} end
end
local next_allowed = tonumber(redis.call('GET', KEYS[2]) or '0')
if now < next_allowed then
  return {'delay', math.ceil((next_allowed - now) / 1000)}
end
local function bump(key)
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, window) end
  return n
end
local result = {'ok', 0}
local tries = bump(KEYS[1])
if trusted then
  if bump(KEYS[5]) == tonumber(ARGV[7]) then table.insert(result, 'device') end
else
  if bump(KEYS[3]) == tonumber(ARGV[5]) then table.insert(result, 'account') end
  if bump(KEYS[4]) == tonumber(ARGV[6]) then table.insert(result, 'address') end
end
if tries > tonumber(ARGV[3]) then
  local delay = math.min(1000 * 2 ^ (tries - tonumber(ARGV[3]) - 1), tonumber(ARGV[4]))
  redis.call('SET', KEYS[2], now + delay, 'PX', math.max(1, math.floor(delay)))
end
return result
"""

# A success clears its source's delay and takes back what its own attempt counted — no more:
# the real user signing in must not hand an attacker a fresh set of guesses at the account.
# KEYS as above; ARGV[1]: trusted.
_SUCCEEDED = """
local function take_back(key)
  if redis.call('EXISTS', key) == 1 and redis.call('DECR', key) <= 0 then
    redis.call('DEL', key)
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
if ARGV[1] == '1' then
  redis.call('DEL', KEYS[5])
else
  take_back(KEYS[3])
  take_back(KEYS[4])
end
return 1
"""


@dataclass(frozen=True)
class Lockout:
    scope: str  # "account", "address", "device" or "delay"
    retry_after: int

    @property
    def message(self):
        if self.scope == "delay":
            seconds = max(1, self.retry_after)
            return (f"Too many failed sign-in attempts in a row. Wait {seconds} second"
                    f"{'s' if seconds != 1 else ''} before the next try.")
        minutes = max(1, -(-self.retry_after // 60))
        hint = (" A device you have signed in on before can still sign in."
                if self.scope in ("account", "address") else "")
        return (f"Too many failed sign-in attempts {SCOPES_MESSAGE[self.scope]}. Sign-in is "
                f"paused for {minutes} minute{'s' if minutes != 1 else ''}.{hint} Try again "
                "later or ask your Cancel Desk administrator.")


@dataclass(frozen=True)
class Attempt:
    """An attempt the throttle let through: check the password, then report how it went."""

    throttle: "SignInThrottle"
    keys: tuple
    trusted: bool
    reached: tuple  # the scopes whose limit this attempt reaches if it fails

    def succeeded(self):
        self.throttle.redis.eval(_SUCCEEDED, len(self.keys), *self.keys,
                                 "1" if self.trusted else "0")


class SignInThrottle:
    def __init__(self, redis, *, per_account=5, per_address=20, per_device=10, free=3,
                 max_delay_seconds=900, window_seconds=900):
        self.redis = redis
        self.limits = {"account": per_account, "address": per_address, "device": per_device}
        self.free = free
        self.max_delay_ms = int(max_delay_seconds * 1000)
        self.window = int(window_seconds)

    @staticmethod
    def _digest(email):
        return hashlib.sha256((email or "").strip().lower().encode()).hexdigest()[:32]

    def _keys(self, email, address, device):
        account, where = self._digest(email), address or "unknown"
        # A known device is its own source: guesses by others at its address never delay it.
        source = f"{account}:device-{device}" if device else f"{account}:{where}"
        return (f"signin:source:{source}", f"signin:source-next:{source}",
                f"signin:account:{account}", f"signin:address:{where}",
                f"signin:device:{account}:{device or '-'}")

    def attempt(self, email, address, device=None):
        """A Lockout (the password must not be checked), or an Attempt to report back on.

        `device`: the known-device id the client proved for this account, else None."""
        keys = self._keys(email, address, device)
        answer = self.redis.eval(
            _ATTEMPT, len(keys), *keys, 0, self.window, self.free,
            self.max_delay_ms, self.limits["account"], self.limits["address"],
            self.limits["device"], "1" if device else "0")
        verdict = answer[0].decode() if isinstance(answer[0], bytes) else answer[0]
        if verdict != "ok":
            return Lockout(verdict, max(1, int(answer[1])))
        reached = tuple(s.decode() if isinstance(s, bytes) else s for s in answer[2:])
        return Attempt(self, keys, bool(device), reached)

    def clear(self, email=None, address=None):
        """Forget counters (an admin's unlock; tests): of an account, an address, or both."""
        doomed = []
        if email:
            digest = self._digest(email)
            doomed.append(f"signin:account:{digest}")
            doomed += self.redis.scan_iter(f"signin:source*:{digest}:*", count=1000)
            doomed += self.redis.scan_iter(f"signin:device:{digest}:*", count=1000)
        if address:
            doomed.append(f"signin:address:{address}")
            doomed += self.redis.scan_iter(f"signin:source*:*:{address}", count=1000)
        if doomed:
            self.redis.delete(*doomed)
