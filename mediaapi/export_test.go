package mediaapi

// CountFiles is countFiles for the external tests of the package.
var CountFiles = countFiles
