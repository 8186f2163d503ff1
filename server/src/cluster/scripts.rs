//! State every node must agree on at the moment it is changed, as Redis keys changed by
//! Lua scripts (a script runs alone, so a check and its update are one step):
//!
//! - `banter:name:<key>`: who owns a name (a hash of the session token), how many
//!   connections hold it on each node, and when the last one let go. Two nodes racing
//!   for one name: the first script to run takes it, the other sees it held.
//! - `banter:conns:<address>`: connections per client address, per node.
//! - `banter:bucket:<budget>:<address>`: the token buckets of an address, with the
//!   same rules as `chat/limits.rs` (the polite-refusal rule included).
//! - `banter:node:<id>`: set by each node's heartbeat with a short expiry; holders and
//!   connections counted on a node whose key expired do not count (a dead node's
//!   connections are gone).

use redis::aio::ConnectionManager;
use redis::Script;

use super::ClusterError;
use crate::storage::Owner;

/// How long a node's liveness key lasts without a heartbeat.
pub const NODE_KEY_MS: u64 = 10_000;

const LIVE_COUNT: &str = r#"
local function live_count(key, prefix)
  local total = 0
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local field, count = fields[i], tonumber(fields[i + 1])
    if count and count > 0 and string.sub(field, 1, #prefix) == prefix then
      if redis.call('EXISTS', 'banter:node:' .. string.sub(field, #prefix + 1)) == 1 then
        total = total + count
      end
    end
  end
  return total
end
"#;

fn claim_script() -> Script {
    Script::new(&format!(
        "{LIVE_COUNT}
        local key = KEYS[1]
        local name, presented, take, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
        local now, hold = tonumber(ARGV[5]), tonumber(ARGV[6])
        local owner = redis.call('HGET', key, 'owner')
        if owner and presented ~= '' and owner == presented then
          redis.call('HINCRBY', key, 'h:' .. node, 1)
          redis.call('HSET', key, 'name', name, 'released', 0)
          redis.call('PERSIST', key)
          return owner
        end
        if owner then
          if live_count(key, 'h:') > 0 then return '' end
          local released = tonumber(redis.call('HGET', key, 'released') or '0')
          if released > 0 and now - released < hold then return '' end
        end
        redis.call('DEL', key)
        redis.call('HSET', key, 'owner', take, 'name', name, 'released', 0, 'h:' .. node, 1)
        return take"
    ))
}

fn release_script() -> Script {
    Script::new(&format!(
        "{LIVE_COUNT}
        local key, node = KEYS[1], ARGV[1]
        local now, hold = tonumber(ARGV[2]), tonumber(ARGV[3])
        if redis.call('EXISTS', key) == 0 then return 0 end
        local left = redis.call('HINCRBY', key, 'h:' .. node, -1)
        if left <= 0 then redis.call('HDEL', key, 'h:' .. node) end
        if live_count(key, 'h:') == 0 then
          redis.call('HSET', key, 'released', now)
          redis.call('PEXPIRE', key, hold + 60000)
        end
        return 1"
    ))
}

fn admit_script() -> Script {
    Script::new(&format!(
        "{LIVE_COUNT}
        local key, node, max = KEYS[1], ARGV[1], tonumber(ARGV[2])
        if live_count(key, 'n:') >= max then return 0 end
        redis.call('HINCRBY', key, 'n:' .. node, 1)
        redis.call('PEXPIRE', key, 86400000)
        return 1"
    ))
}

fn leave_script() -> Script {
    Script::new(
        "local key, node = KEYS[1], ARGV[1]
        local left = redis.call('HINCRBY', key, 'n:' .. node, -1)
        if left <= 0 then redis.call('HDEL', key, 'n:' .. node) end
        return 1",
    )
}

/// A token bucket as `chat/limits.rs` keeps it: once it refused, it refuses until the
/// announced time; a refusal of a request that arrived before that time is "early".
fn bucket_script() -> Script {
    Script::new(
        "local key = KEYS[1]
        local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
        local now, arrived = tonumber(ARGV[3]), tonumber(ARGV[4])
        local state = redis.call('HMGET', key, 'tokens', 'at', 'blocked')
        local tokens = tonumber(state[1]) or burst
        local at = tonumber(state[2]) or now
        local blocked = tonumber(state[3]) or 0
        local early = 0
        if blocked > 0 and arrived < blocked then early = 1 end
        local ttl = math.ceil(burst / rate * 1000) + 1000
        if blocked > 0 and now < blocked then
          return {0, blocked - now, early}
        end
        tokens = math.min(burst, tokens + math.max(0, now - at) / 1000 * rate)
        if tokens >= 1 then
          redis.call('HSET', key, 'tokens', tostring(tokens - 1), 'at', now, 'blocked', 0)
          redis.call('PEXPIRE', key, ttl)
          return {1, 0, 0}
        end
        local wait = math.ceil((1 - tokens) / rate * 1000)
        redis.call('HSET', key, 'tokens', tostring(tokens), 'at', now, 'blocked', now + wait)
        redis.call('PEXPIRE', key, ttl)
        return {0, wait, early}",
    )
}

fn held_script() -> Script {
    Script::new(&format!(
        "{LIVE_COUNT}
        local key = KEYS[1]
        local now, hold = tonumber(ARGV[1]), tonumber(ARGV[2])
        local name = redis.call('HGET', key, 'name')
        if not name then return '' end
        if live_count(key, 'h:') > 0 then return name end
        local released = tonumber(redis.call('HGET', key, 'released') or '0')
        if released > 0 and now - released < hold then return name end
        return ''"
    ))
}

/// What a claim came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameClaim {
    /// Granted to this owner.
    Granted(Owner),
    Held,
}

/// Which shared budget of an address.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Messages,
    Requests,
    RoomCreation,
}

impl Budget {
    fn key(self) -> &'static str {
        match self {
            Budget::Messages => "messages",
            Budget::Requests => "requests",
            Budget::RoomCreation => "rooms",
        }
    }
}

impl super::Cluster {
    /// Takes a name for one more connection on this node: `presented` is the owner of
    /// the token the client showed (if any), `take` the owner to give a free name to.
    pub async fn claim_name(
        &self,
        key: &str,
        name: &str,
        presented: Option<&Owner>,
        take: &Owner,
        now_ms: i64,
        hold_ms: u64,
    ) -> Result<NameClaim, ClusterError> {
        let mut commands: ConnectionManager = self.commands();
        let owner: String = claim_script()
            .key(format!("banter:name:{key}"))
            .arg(name)
            .arg(presented.map_or("", |o| o.0.as_str()))
            .arg(&take.0)
            .arg(&self.node)
            .arg(now_ms)
            .arg(hold_ms)
            .invoke_async(&mut commands)
            .await?;
        Ok(if owner.is_empty() {
            NameClaim::Held
        } else {
            NameClaim::Granted(Owner(owner))
        })
    }

    /// The name in use (held) that one of `looks` belongs to, if another than `key`.
    pub async fn looks_taken(
        &self,
        key: &str,
        looks: &[String],
        now_ms: i64,
        hold_ms: u64,
    ) -> Result<Option<String>, ClusterError> {
        let mut commands = self.commands();
        for look in looks {
            let other: Option<String> = redis::cmd("GET")
                .arg(format!("banter:look:{look}"))
                .query_async(&mut commands)
                .await?;
            let Some(other) = other.filter(|other| other != key) else {
                continue;
            };
            let held: String = held_script()
                .key(format!("banter:name:{other}"))
                .arg(now_ms)
                .arg(hold_ms)
                .invoke_async(&mut commands)
                .await?;
            if !held.is_empty() {
                return Ok(Some(held));
            }
        }
        Ok(None)
    }

    /// Notes which name `looks` belong to (for [`Cluster::looks_taken`]).
    pub async fn record_looks(&self, key: &str, looks: &[String]) -> Result<(), ClusterError> {
        let mut commands = self.commands();
        for look in looks {
            let _: () = redis::cmd("SET")
                .arg(format!("banter:look:{look}"))
                .arg(key)
                .query_async(&mut commands)
                .await?;
        }
        Ok(())
    }

    pub async fn release_name(
        &self,
        key: &str,
        now_ms: i64,
        hold_ms: u64,
    ) -> Result<(), ClusterError> {
        let mut commands = self.commands();
        let _: i64 = release_script()
            .key(format!("banter:name:{key}"))
            .arg(&self.node)
            .arg(now_ms)
            .arg(hold_ms)
            .invoke_async(&mut commands)
            .await?;
        Ok(())
    }

    /// Counts a connection of `address` on this node, unless the address has `max`
    /// connections on live nodes already.
    pub async fn admit(&self, address: &str, max: usize) -> Result<bool, ClusterError> {
        let mut commands = self.commands();
        let admitted: i64 = admit_script()
            .key(format!("banter:conns:{address}"))
            .arg(&self.node)
            .arg(max.min(i64::MAX as usize) as i64)
            .invoke_async(&mut commands)
            .await?;
        Ok(admitted == 1)
    }

    pub async fn release_connection(&self, address: &str) -> Result<(), ClusterError> {
        let mut commands = self.commands();
        let _: i64 = leave_script()
            .key(format!("banter:conns:{address}"))
            .arg(&self.node)
            .invoke_async(&mut commands)
            .await?;
        Ok(())
    }

    /// Takes a token from an address' shared bucket: `Ok(None)` when granted, else the
    /// wait in milliseconds and whether the request arrived early.
    pub async fn take(
        &self,
        budget: Budget,
        address: &str,
        rate: f64,
        burst: f64,
        now_ms: i64,
        arrived_ms: i64,
    ) -> Result<Option<(u64, bool)>, ClusterError> {
        let mut commands = self.commands();
        let (granted, wait, early): (i64, i64, i64) = bucket_script()
            .key(format!("banter:bucket:{}:{address}", budget.key()))
            .arg(rate)
            .arg(burst)
            .arg(now_ms)
            .arg(arrived_ms)
            .invoke_async(&mut commands)
            .await?;
        Ok((granted == 0).then_some((wait.max(0) as u64, early == 1)))
    }

    /// Renews this node's liveness key.
    pub(super) async fn renew_liveness(&self) -> Result<(), ClusterError> {
        let mut commands = self.commands();
        let _: () = redis::cmd("SET")
            .arg(format!("banter:node:{}", self.node))
            .arg(1)
            .arg("PX")
            .arg(NODE_KEY_MS)
            .query_async(&mut commands)
            .await?;
        Ok(())
    }
}
