//go:build plantedbugs

package statemachine

// plantedApplyRetryTwice, in plantedbugs builds, makes Apply forget request
// ids: a retried request is applied again. The simulator must notice.
var plantedApplyRetryTwice = false

// PlantApplyRetryTwice turns the planted bug on or off.
func PlantApplyRetryTwice(on bool) { plantedApplyRetryTwice = on }
