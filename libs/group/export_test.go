package group

// Validate applies Run's defaults and checks, for tests in group_test.
func Validate(c Config) error {
	_, err := c.withDefaults()
	return err
}
