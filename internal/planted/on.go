//go:build plantedbugs

package planted

var plantedBugs [Count]bool

// On says whether b is planted.
func On(b Bug) bool { return plantedBugs[b] }

// Plant switches b on or off (plantedbugs builds only).
func Plant(b Bug, on bool) { plantedBugs[b] = on }
