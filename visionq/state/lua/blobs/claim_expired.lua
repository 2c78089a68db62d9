-- KEYS[1] = the expiry index (blobs)
-- ARGV[1] = now (Unix seconds)
-- ARGV[2] = how many jobs at most
-- ARGV[3] = how long a claim lasts (seconds)
-- ARGV[4] = how long an orphaned image stays locked (ms)
-- ARGV[5] = keys.JOB_PREFIX
-- ARGV[6] = keys.JOB_BLOBS_PREFIX
-- ARGV[7] = keys.BLOB_PREFIX
-- ARGV[8] = keys.BLOB_LOCK_SUFFIX
-- ARGV[9] = keys.FILE_PREFIX: an id of a file (`file-...`) names a file's hash, not a job's
--
-- For each job (or file) due: a hash still there (its host's clock ran ahead of Redis's) is looked
-- at again when Redis expires it; a gone one is claimed for a while (another sweeper
-- leaves it alone meanwhile, and takes it over should this one die) and comes back with
-- its orphaned images: {id, n, sha1..shan, id, ...}. Reads the jobs' hashes; writes the
-- expiry index and the images' sets of users and locks (drop_references).
local now = tonumber(ARGV[1])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[2])) do
  local prefix = ARGV[5]
  if string.sub(id, 1, 5) == 'file-' then prefix = ARGV[9] end
  local left = redis.call('PTTL', prefix .. id)
  if left > 0 then
    redis.call('ZADD', KEYS[1], now + left / 1000, id)
  elseif left == -1 then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
    local orphans = drop_references(ARGV[6] .. id, id, ARGV[4], ARGV[7], ARGV[8])
    table.insert(out, id)
    table.insert(out, #orphans)
    for _, sha in ipairs(orphans) do table.insert(out, sha) end
  end
end
return out
