# The two commands of the README. Both install and build what is missing first.
.PHONY: demo test bench

demo:
	./testcluster/prepare.sh
	cargo build --release --bin weir
	cargo run --release -p weir-testkit --bin demo

test:
	./testcluster/prepare.sh
	cargo test --workspace --all-targets

bench:
	cargo bench -p weir-core --bench judges
