package updater

import "errors"

// Exit codes of the contract. The engine classifies its failures; the CLI only maps them.
const (
	CodeOK              = 0
	CodeFailed          = 1   // failed or refused; the install is unchanged
	CodeUsage           = 2   // usage or configuration error
	CodeRolledBack      = 3   // the new version did not come up; the old one was restored and runs
	CodeOperator        = 4   // rollback failed or incomplete: an operator is needed
	CodeUpdateAvailable = 100 // `check`: a newer version is available
)

// Error carries an exit code through wrapping, read with errors.As.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Err: err}
}

// ExitCode maps an error to the contract's exit status; unclassified errors are failures with the
// install unchanged, because every step before apply leaves it so.
func ExitCode(err error) int {
	if err == nil {
		return CodeOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeFailed
}

// ErrInterrupted marks a run stopped by SIGINT or SIGTERM.
var ErrInterrupted = errors.New("interrupted by a signal")
