package federation

// SetEDUHandler registers a handler for an EDU type (tests; call before the server gets traffic).
func (a *API) SetEDUHandler(eduType string, h EDUHandler) { a.edus[eduType] = h }
