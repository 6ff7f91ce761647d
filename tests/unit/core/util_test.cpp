#include <catch2/catch_test_macros.hpp>


#include "efftrain/core/error.h"
#include "efftrain/core/files.h"
#include "efftrain/core/registry.h"
#include "efftrain/core/util.h"
#include "helpers.h"

using namespace efftrain;

TEST_CASE("sha256 matches the published test vectors") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST_CASE("sha256 fed in pieces, and of a file, equals the one-shot digest") {
  // One million 'a' (a published vector), fed in uneven pieces that straddle block edges.
  const std::string million(1000000, 'a');
  const std::string want = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
  CHECK(sha256_hex(million) == want);
  Sha256 h;
  for (size_t at = 0, n = 1; at < million.size(); at += n, n = n * 7 % 131 + 1)
    h.update(std::string_view(million).substr(at, n));
  CHECK(h.hex() == want);
  test::TempDir dir;
  CHECK(sha256_file(dir.write("m.txt", million)) == want);
  CHECK(test::user_error_of([&] { sha256_file(dir.file("missing")); }).find("missing: cannot read") != std::string::npos);
}

TEST_CASE("write_file_atomic replaces the file and leaves no temporary behind") {
  test::TempDir dir;
  const std::string p = dir.file("x.json");
  write_file_atomic(p, "first");
  write_file_atomic(p, "second");
  CHECK(test::read_text(p) == "second");
  CHECK(test::read_text(dir.file("x.json")) == "second");
  write_file_atomic(p, "");
  CHECK(test::read_text(p).empty());
  files::remove_tree(dir.file("x.json"));
  CHECK(files::is_empty_dir(dir.path()));  // no temporary left behind
}

TEST_CASE("closest_match suggests near names and nothing for far ones") {
  const std::vector<std::string> keys = {"batch_size", "max_steps", "eval_every"};
  CHECK(closest_match("bach_size", keys) == "batch_size");
  CHECK(closest_match("max_step", keys) == "max_steps");
  CHECK(closest_match("completely_different", keys).empty());
}

TEST_CASE("read_file names the path when it cannot read") {
  CHECK_THROWS_AS(read_file("/nonexistent/efftrain/file.yaml"), UserError);
  try {
    read_file("/nonexistent/efftrain/file.yaml", "experiment file");
  } catch (const UserError& e) {
    CHECK(std::string(e.what()).find("/nonexistent/efftrain/file.yaml") != std::string::npos);
  }
}

TEST_CASE("the registry catalog lists the foundation components by kind") {
  CHECK(catalog::has("task", "synthetic_cnn"));
  CHECK(catalog::has("precision", "fp32"));
  CHECK(catalog::has("accumulation", "none"));
  CHECK(catalog::has("schedule", "constant"));
  CHECK(catalog::has("optimizer", "adamw"));
  CHECK(catalog::has("grad_sync", "none"));
  CHECK(catalog::has("checkpointing", "none"));
  CHECK_FALSE(catalog::has("precision", "fp64"));
  const auto all = catalog::list();
  for (size_t i = 1; i < all.size(); ++i)
    CHECK((all[i - 1].kind < all[i].kind || (all[i - 1].kind == all[i].kind && all[i - 1].name < all[i].name)));
}

TEST_CASE("files: make_dirs, is_empty_dir, remove_tree, absolute") {
  test::TempDir dir;
  const std::string deep = dir.file("a/b/c");
  files::make_dirs(deep);
  CHECK(files::is_dir(deep));
  CHECK(files::is_empty_dir(deep));
  CHECK_FALSE(files::is_empty_dir(dir.file("a")));
  CHECK_FALSE(files::is_empty_dir(dir.file("missing")));
  test::TempDir().write("x", "y");
  dir.write("a/b/file.txt", "text");
  files::remove_tree(dir.file("a"));
  CHECK_FALSE(files::exists(dir.file("a")));
  files::remove_tree(dir.file("a"));  // missing is fine
  CHECK(files::absolute(dir.path() + "/./x/../y") == files::absolute(dir.path()) + "/y");
}

TEST_CASE("invalid_utf8_offset finds the first byte that is not well-formed UTF-8") {
  using efftrain::invalid_utf8_offset;
  constexpr auto ok = std::string_view::npos;
  CHECK(invalid_utf8_offset("") == ok);
  CHECK(invalid_utf8_offset("plain ascii") == ok);
  CHECK(invalid_utf8_offset("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == ok);
  CHECK(invalid_utf8_offset("ab\x97") == 2);              // lone continuation byte
  CHECK(invalid_utf8_offset("a\xc3") == 1);               // truncated sequence
  CHECK(invalid_utf8_offset("\xc0\xaf") == 0);            // overlong '/'
  CHECK(invalid_utf8_offset("\xed\xa0\x80") == 0);        // surrogate U+D800
  CHECK(invalid_utf8_offset("\xf4\x90\x80\x80") == 0);    // above U+10FFFF
  CHECK(invalid_utf8_offset("x\xe2\x28\xa1") == 1);       // bad continuation
}
