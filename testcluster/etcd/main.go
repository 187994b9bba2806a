// The etcd server, built from go.etcd.io/etcd/server/v3 (Debian's etcd 3.4 is too old
// for current API servers).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
