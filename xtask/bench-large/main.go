// A large Go program for `cargo xtask bench`: it links much of the standard
// library (tens of thousands of functions, a big .gopclntab and DWARF) and then
// waits, so the bench can time attaching to a binary of realistic size.
package main

import (
	"archive/tar"
	"archive/zip"
	"compress/bzip2"
	"compress/flate"
	"compress/gzip"
	"compress/lzw"
	"compress/zlib"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"debug/dwarf"
	"debug/elf"
	"debug/gosym"
	"encoding/asn1"
	"encoding/csv"
	"encoding/gob"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/printer"
	"go/token"
	"go/types"
	"html/template"
	"image/gif"
	"image/jpeg"
	"image/png"
	"log/slog"
	"math/big"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"net/rpc"
	"net/smtp"
	"os"
	"reflect"
	"regexp"
	"text/template/parse"
	"time"
)

// keep makes every package reachable, so the linker keeps their code.
var keep = []any{
	tar.NewReader, zip.NewReader, bzip2.NewReader, flate.NewReader, gzip.NewReader,
	lzw.NewReader, zlib.NewReader, ecdsa.GenerateKey, ed25519.GenerateKey,
	rsa.GenerateKey, tls.Dial, x509.ParseCertificate, sql.Open, dwarf.New, elf.Open,
	gosym.NewTable, asn1.Marshal, csv.NewReader, gob.NewEncoder, json.Marshal,
	xml.Marshal, ast.Walk, format.Source, parser.ParseFile, printer.Fprint,
	token.NewFileSet, types.NewPackage, template.New, gif.Decode, jpeg.Decode,
	png.Decode, slog.New, big.NewInt, multipart.NewReader, http.ListenAndServe,
	httptest.NewServer, mail.ParseAddress, rpc.NewServer, smtp.Dial, regexp.Compile,
	parse.Parse,
}

func main() {
	fmt.Println("ready", len(keep), reflect.TypeOf(keep).Kind())
	var line string
	fmt.Fscanln(os.Stdin, &line) // until the bench closes stdin
	time.Sleep(time.Millisecond)
}
