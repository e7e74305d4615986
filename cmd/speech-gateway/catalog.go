package main

import (
	"fmt"

	prom "github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/catalog"
)

// setupCatalog is the model catalog in force: --catalog-file, re-read when
// it changes (checked every --catalog-reload-interval; negative: never);
// else, with --dev, the built-in catalog as the simulator
// plays it (devCatalog); else the built-in catalog. The caller closes it.
func setupCatalog(cfg *config, log *zap.Logger, reg prom.Registerer) (*catalog.Live, error) {
	opts := cfg.catalog.opts
	opts.Logger, opts.Metrics = log, catalog.NewMetrics(reg)
	// At start-up and at every reload: a catalog without the default
	// voice would fail every stream that names none.
	opts.Check = func(c *catalog.Catalog) error { return checkDefaultVoice(cfg, c) }
	if cfg.catalog.file != "" {
		return catalog.Watch(cfg.catalog.file, opts)
	}
	c, err := catalog.Default()
	source := "built in"
	if err == nil && cfg.serve.dev {
		c, err = devCatalog(c, cfg.serve.devProfile)
		source = "built in, as the simulator plays it"
	}
	if err == nil {
		err = checkDefaultVoice(cfg, c)
	}
	if err != nil {
		return nil, err
	}
	log.Info("catalog", zap.String("source", source), zap.Int("models", c.Len()))
	return catalog.Static(c, opts), nil
}

// checkDefaultVoice refuses a default voice that the catalog says the
// default model lacks: every stream that names neither would fail.
func checkDefaultVoice(cfg *config, c *catalog.Catalog) error {
	m := c.Lookup(cfg.service.DefaultTTSModel)
	if m == nil {
		return nil
	}
	for _, p := range m.Check(catalog.Request{Voice: cfg.service.DefaultVoice}) {
		if p.Field == catalog.FieldVoice {
			return fmt.Errorf("--default-voice: %s", p.Message)
		}
	}
	return nil
}
