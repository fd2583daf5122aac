package harden

import (
	"encoding/json"

	"go.uber.org/zap"
)

// LogApp runs the checks over the configuration of one app (v, marshalled as that app
// under "apps") and logs each warning and failure at WARN. Checks of other parts of the
// configuration (sites, the admin endpoint, other apps) pass for want of input, so this
// covers only what v holds; `caracal harden` checks the whole configuration.
func LogApp(logger *zap.Logger, app string, v any) {
	raw, err := json.Marshal(map[string]any{"apps": map[string]any{app: v}})
	if err == nil {
		var fs []Finding
		if fs, err = Check(raw, Options{Resolve: ResolveFromEnvironment}); err == nil {
			for _, f := range fs {
				if f.Level != Pass {
					logger.Warn("hardening: "+f.Where+" "+f.Message, zap.String("check", f.Check), zap.String("result", f.Level.String()), zap.String("fix", f.Fix))
				}
			}
			return
		}
	}
	logger.Warn("hardening: cannot check the configuration", zap.Error(err))
}
