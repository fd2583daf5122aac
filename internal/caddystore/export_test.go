package caddystore

// PackageDatabase returns this package's test database, for the tests of package
// caddystore_test.
func PackageDatabase() string { return dsn }
