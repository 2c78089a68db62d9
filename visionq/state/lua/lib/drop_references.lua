-- drop_references(blobs_key, job_id, lock_ms, blob_prefix, lock_suffix)
--   blobs_key = a job's set of images (blobs)
--   job_id = the job
--   lock_ms = how long an orphaned image stays locked (ms)
--   blob_prefix, lock_suffix = keys.BLOB_PREFIX and keys.BLOB_LOCK_SUFFIX: an image's set
--     of users is blob_prefix .. sha, its lock that .. lock_suffix
--
-- Drops the job's references to the images in its set (the set is kept: the caller
-- deletes it once done); returns the images no job uses any more, each locked in the
-- same step, so an intake adding a reference right after sees the lock and waits until
-- the file is gone before it puts it back. The keys it derives need a single Redis (not
-- a cluster), as every multi-key script of visionq does.
local function drop_references(blobs_key, job_id, lock_ms, blob_prefix, lock_suffix)
  local orphans = {}
  for _, sha in ipairs(redis.call('SMEMBERS', blobs_key)) do
    local users = blob_prefix .. sha
    redis.call('SREM', users, job_id)
    if redis.call('SCARD', users) == 0 and
       redis.call('SET', users .. lock_suffix, job_id, 'NX', 'PX', lock_ms) then
      table.insert(orphans, sha)
    end
  end
  return orphans
end
