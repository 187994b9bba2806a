# The two commands of the README. Both install and build what is missing first.
.PHONY: demo test bench fuzz image krew peers

# ROUTER=gateway-api runs examples/ambient (Gateway API HTTPRoute) instead of examples/dev.
demo:
	./testcluster/prepare.sh
	cargo build --release --bin weir
	WEIR_DEMO_ROUTER=$(ROUTER) cargo run --release -p weir-testkit --bin demo

test:
	./testcluster/prepare.sh --no-build
	./tests/all.sh

# Longer than the 20 s per target of `make test`: FUZZ_SECONDS=3600 make fuzz
fuzz:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-600} ./tests/fuzz.sh

bench:
	cargo bench -p weir-core --bench judges
	cargo bench --bench validate

# weir's container image as an OCI archive, without a container engine (see image/build.sh).
image:
	./image/build.sh

# The kubectl plugin's release archive and its krew manifest (see image/krew.sh).
krew:
	./image/krew.sh

# weir beside Flagger and Argo Rollouts on one local cluster (benches/peers.rs); not part
# of `make test`.
# Sizes: WEIR_PEERS_CANARIES=100,1000 make peers. Everything is built first (the network
# is needed for that); the bench then runs in a network namespace of its own that has
# only loopback, since Flagger's and Argo's servers listen on every interface.
peers:
	./testcluster/prepare.sh --no-build
	./testcluster/build.sh >/dev/null
	./testcluster/peers.sh >/dev/null
	cargo bench --bench peers --no-run
	unshare --net sh -c 'ip link set lo up && cargo bench --offline --bench peers'
