package main

import (
	"fmt"

	prom "github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/speech-gateway/speech-gateway/catalog"
)

// setupCatalog is the model catalog in force: --catalog-file, re-read when
// it changes; else, with --dev, the built-in catalog as the simulator
// plays it (devCatalog); else the built-in catalog. The caller closes it.
func setupCatalog(cfg *config, log *zap.Logger, reg prom.Registerer) (*catalog.Live, error) {
	opts := catalog.Options{Logger: log, Metrics: catalog.NewMetrics(reg)}
	if cfg.catalogFile != "" {
		opts.Reload = cfg.catalogReload
		if opts.Reload == 0 {
			opts.Reload = -1 // never
		}
		live, err := catalog.Watch(cfg.catalogFile, opts)
		if err != nil {
			return nil, err
		}
		if err := checkDefaultVoice(cfg, live.Current()); err != nil {
			live.Close()
			return nil, err
		}
		return live, nil
	}
	c, err := catalog.Default()
	source := "built in"
	if err == nil && cfg.dev {
		c, err = devCatalog(c, cfg.devProfile)
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
	m := c.Lookup(cfg.defaultTTSModel)
	if m == nil {
		return nil
	}
	for _, p := range m.Check(catalog.Request{Voice: cfg.defaultVoice}) {
		if p.Field == catalog.FieldVoice {
			return fmt.Errorf("--default-voice: %s", p.Message)
		}
	}
	return nil
}
