package serveracl

import "sync"

// maxCached bounds a Cache; when full it starts again empty (ACLs are few: one per room that has
// one, and compiling one is cheap next to the requests it serves).
const maxCached = 4096

// Cache keeps compiled ACLs by a key that changes whenever the ACL may have (the state event's
// ID, and whether it was redacted), so entries never need invalidating. Safe for concurrent use;
// the zero value is ready.
type Cache struct {
	mu sync.Mutex
	m  map[string]*ACL
}

// Get returns the ACL cached under key, or compiles the content load returns and caches it.
func (c *Cache) Get(key string, load func() ([]byte, error)) (*ACL, error) {
	c.mu.Lock()
	acl, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return acl, nil
	}
	content, err := load()
	if err != nil {
		return nil, err
	}
	acl = Parse(content)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCached {
		c.m = make(map[string]*ACL)
	}
	c.m[key] = acl
	return acl, nil
}
