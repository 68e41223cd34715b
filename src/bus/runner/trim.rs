//! Trimming: a stream keeps entries until every group has read them and the retention has
//! passed, so a lagging group never loses what it has not seen.

use std::time::Duration;

use anyhow::Context;

use crate::bus::store::Conn;

/// Trims entries that every group is done with and that are older than the
/// retention; never an entry some group still needs.
const TRIM_SCRIPT: &str = r"
local function older(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local min = ARGV[1]
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local cand = info['last-delivered-id']
  if tonumber(info['pending']) > 0 then
    local p = redis.call('XPENDING', KEYS[1], info['name'], '-', '+', 1)
    if #p > 0 then cand = p[1][1] end
  end
  if older(cand, min) then min = cand end
end
return redis.call('XTRIM', KEYS[1], 'MINID', min)
";
pub(super) async fn trim(conn: &mut Conn, stream: &str) {
    // Keep a day of history for inspection; never what a group still needs.
    match trim_stream(conn, stream, Duration::from_secs(24 * 3600)).await {
        Ok(n) if n > 0 => tracing::info!("trimmed {n} finished entries from {stream}"),
        Ok(_) => {}
        Err(err) => tracing::debug!("trim of {stream} failed: {err:#}"),
    }
}
/// Deletes entries older than `keep` that every consumer group has finished
/// with: below each group's oldest pending entry and last-delivered id. Returns
/// how many were deleted.
pub async fn trim_stream(conn: &mut Conn, stream: &str, keep: Duration) -> anyhow::Result<i64> {
    let floor = format!(
        "{}-0",
        crate::support::msg::now_millis() - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX)
    );
    let trimmed: i64 = redis::Script::new(TRIM_SCRIPT)
        .key(stream)
        .arg(floor)
        .invoke_async(conn)
        .await
        .with_context(|| format!("trimming {stream}"))?;
    Ok(trimmed)
}
