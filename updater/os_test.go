package updater

import "os"

func osSymlink(oldname, newname string) error { return os.Symlink(oldname, newname) }
