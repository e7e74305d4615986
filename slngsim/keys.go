package slngsim

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
)

// SetAPIKeys replaces the keys the simulator accepts (Options.APIKey and
// APIKeys) for handshakes from now on, as a rotated or revoked key would;
// open sessions go on. No keys accepts any request.
func (s *Server) SetAPIKeys(keys ...string) {
	keys = append([]string(nil), keys...)
	s.keys.Store(&keys)
}

func (s *Server) accepts(key string) bool {
	keys := *s.keys.Load()
	if len(keys) == 0 {
		return true
	}
	ok := false
	for _, k := range keys {
		if k != "" && subtle.ConstantTimeCompare([]byte(key), []byte(k)) == 1 {
			ok = true
		}
	}
	return ok
}

// KeyID identifies a key in SessionInfo without revealing it: the first 8
// bytes of its SHA-256, in hex; "" for no key.
func KeyID(key string) string {
	if key == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:8])
}

func (s *Server) acquireKey(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opts.MaxConcurrentPerKey > 0 && s.perKey[key] >= s.opts.MaxConcurrentPerKey {
		return false
	}
	s.perKey[key]++
	return true
}

func (s *Server) releaseKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.perKey[key]--
	if s.perKey[key] <= 0 {
		delete(s.perKey, key)
	}
}
