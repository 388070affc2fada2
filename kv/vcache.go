package kv

// versionCache holds the version and size of recently stored records, by
// key, so that a replica compares a write's version without reading
// storage (see Node.apply). It is bounded by Config.VersionCache.
type versionCache struct {
	m map[string]vmeta
}

// vmeta is what the version cache keeps of a stored record.
type vmeta struct {
	version uint64
	size    int64 // key and value bytes (Record.Size)
}

// get returns what the cache knows of key.
func (c *versionCache) get(key []byte) (vmeta, bool) {
	m, ok := c.m[string(key)]
	return m, ok
}

// put notes the version of r, being stored under ks, keeping at most limit
// entries (none if limit is negative). Tombstones are not kept: storage
// may collect one as it writes it.
func (c *versionCache) put(ks string, r Record, limit int) {
	if limit < 0 {
		return
	}
	if r.Tomb {
		delete(c.m, ks)
		return
	}
	if c.m == nil {
		c.m = make(map[string]vmeta)
	}
	if _, ok := c.m[ks]; !ok && len(c.m) >= limit {
		// Full: drop a sixteenth, wherever map iteration starts.
		drop := max(len(c.m)/16, 1)
		for k := range c.m {
			delete(c.m, k)
			if drop--; drop == 0 {
				break
			}
		}
	}
	c.m[ks] = vmeta{r.Version, r.Size()}
}

// drop forgets key.
func (c *versionCache) drop(key []byte) { delete(c.m, string(key)) }

// reset forgets every key.
func (c *versionCache) reset() { clear(c.m) }

// len returns how many keys the cache holds.
func (c *versionCache) len() int { return len(c.m) }
