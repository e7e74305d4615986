package main

import (
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
		return catalog.Watch(cfg.catalogFile, opts)
	}
	c, err := catalog.Default()
	source := "built in"
	if err == nil && cfg.dev {
		c, err = devCatalog(c)
		source = "built in, as the simulator plays it"
	}
	if err != nil {
		return nil, err
	}
	log.Info("catalog", zap.String("source", source), zap.Int("models", c.Len()))
	return catalog.Static(c, opts), nil
}
