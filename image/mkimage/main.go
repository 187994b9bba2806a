// mkimage assembles weir's container image without a container engine: one layer
// holding the static `weir` binary at /weir, run as a non-root user, written as an OCI
// image archive (an OCI image layout in a tar file) that `skopeo copy
// oci-archive:...`, `podman load` or `crane push` take.
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	binary := flag.String("binary", "", "the weir binary to put at /weir")
	version := flag.String("version", "dev", "image version (label and tag)")
	ref := flag.String("ref", "ghcr.io/weir-dev/weir", "image name recorded in the archive")
	out := flag.String("out", "weir.oci.tar", "where to write the OCI image archive")
	allowDynamic := flag.Bool("allow-dynamic", false, "accept a dynamically linked binary (tests only: it cannot run from scratch)")
	flag.Parse()
	if err := run(*binary, *version, *ref, *out, *allowDynamic); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(binary, version, ref, out string, allowDynamic bool) error {
	static, err := isStatic(binary)
	if err != nil {
		return err
	}
	if !static && !allowDynamic {
		return fmt.Errorf("%s is dynamically linked: the image has no libc (build it with -C target-feature=+crt-static)", binary)
	}
	layer, err := binaryLayer(binary)
	if err != nil {
		return err
	}
	oci := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(oci, types.OCIConfigJSON), layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config = v1.Config{
		Entrypoint: []string{"/weir"},
		Cmd:        []string{"controller"},
		User:       "65532:65532",
		WorkingDir: "/",
		Labels: map[string]string{
			"org.opencontainers.image.title":   "weir",
			"org.opencontainers.image.version": version,
			"org.opencontainers.image.source":  "https://github.com/weir-dev/weir",
		},
	}
	// The layers' diff IDs stay as AppendLayers recorded them in the config file.
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return err
	}
	return writeArchive(img, ref+":"+version, out)
}

// isStatic says whether an ELF binary needs no interpreter (no dynamic loader, no libc).
func isStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// binaryLayer is a gzip layer with the binary at /weir, owned by root, mode 0755, with
// a fixed time, so the same binary gives the same layer digest.
func binaryLayer(path string) (v1.Layer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Name: "weir", Mode: 0o755, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType("application/vnd.oci.image.layer.v1.tar+gzip"))
}

// writeArchive writes the image as an OCI image layout and tars it into `out`.
func writeArchive(img v1.Image, name, out string) error {
	dir, err := os.MkdirTemp("", "weir-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	annotations := map[string]string{"org.opencontainers.image.ref.name": name}
	if err := p.AppendImage(img, layout.WithAnnotations(annotations)); err != nil {
		return err
	}
	return tarDir(dir, out)
}

func tarDir(dir, out string) error {
	f, err := os.Create(out + ".tmp")
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		hdr.ModTime = time.Unix(0, 0)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out + ".tmp")
		return err
	}
	return os.Rename(out+".tmp", out)
}
