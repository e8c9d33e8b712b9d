"""Evidence an officer can defend (docs/evidence.md): captured for every violation by a clock
job of the collector (`capture`), frozen in a canonical record with its SHA-256 (`content`,
`store`), verified (`integrity`), drawn (`render`) and packed as PDF (`pack`); `muck
evidence` (`cli`)."""
