module goanchor

go 1.19

require goseed v0.0.0

// The Go reconstruction of the seed, beside the repository (../shared).
replace goseed => ../../../../../shared/anchors/go-seed
