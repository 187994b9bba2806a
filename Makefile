# The two commands of the README. Both install and build what is missing first.
.PHONY: demo test bench

demo:
	./testcluster/prepare.sh
	cargo run --release --bin demo

test:
	./testcluster/prepare.sh
	cargo test --all-targets

bench:
	cargo bench --bench judges
