// tests/options_test.cpp — the option schema: precedence (command line > INI > default), every form a
// value may take, and error messages asserted on their text (file, line, key, value, suggestion).
#include <sys/stat.h>

#include <functional>
#include <sstream>

#include <gtest/gtest.h>

#include "tests/test_util.h"
#include "tools/options.h"

using uio::cli::OptionError;
using uio::cli::Schema;

namespace {

// A stand-in for a command's config struct: the member initialisers are the defaults.
struct TrainConfig {
  std::string model = "models/tiny-llama";
  int64_t segment_len = 1024;
  int64_t steps = 300;
  double lr = 2.5e-4;
  bool use_memory = true;
  bool verbose = false;
  std::string run_name = "first run";
};

struct Train {
  TrainConfig config;
  Schema schema{"train", "Train the memory compressor."};
  Train() {
    schema.add("model", &config.model, "model folder (HF or GGUF)")
        .add("segment_len", &config.segment_len, "tokens per segment")
        .add("steps", &config.steps, "optimiser steps")
        .add("lr", &config.lr, "learning rate")
        .add("use_memory", &config.use_memory, "read through compressed memory")
        .add("verbose", &config.verbose, "log every step")
        .add("run_name", &config.run_name, "name of the run");
  }
  bool parse(const std::vector<std::string>& args) {
    std::ostringstream out;
    return schema.parse(args, out);
  }
};

std::string write_ini(const std::string& text, const std::string& name = "train.ini") {
  auto path = uio::test::scratch_dir() / name;
  uio::test::write_file(path, text);
  return path.string();
}

// The message of the OptionError that `f` throws (a test failure if it throws none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const OptionError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an OptionError";
  return "";
}

std::string train_error(const std::vector<std::string>& args) {
  return error_of([&] { Train().parse(args); });
}

}  // namespace

TEST(Options, DefaultsAreUsedWhenNothingIsGiven) {
  Train t;
  EXPECT_TRUE(t.parse({}));
  EXPECT_EQ(t.config.model, "models/tiny-llama");
  EXPECT_EQ(t.config.segment_len, 1024);
  EXPECT_EQ(t.config.steps, 300);
  EXPECT_DOUBLE_EQ(t.config.lr, 2.5e-4);
  EXPECT_TRUE(t.config.use_memory);
  EXPECT_FALSE(t.config.verbose);
  EXPECT_EQ(t.config.run_name, "first run");
}

TEST(Options, TheDefaultIsTheFieldsValueWhenAdded) {
  int64_t window = 6;
  Schema s("eval", "Evaluate.");
  s.add("window", &window, "segments kept in the window");
  window = 99;  // changed after add(): parse writes the default back
  std::ostringstream out;
  ASSERT_TRUE(s.parse({}, out));
  EXPECT_EQ(window, 6);
  EXPECT_NE(s.help().find("(default: 6)"), std::string::npos) << s.help();
}

TEST(Options, IniOverridesDefaultsAndCommandLineOverridesIni) {
  auto path = write_ini(
      "# a run\n"
      "steps = 40\n"
      "\n"
      "[memory]\n"
      "segment_len = 512   # tokens\n"
      "; full-line comment\n"
      "[optim]\n"
      "lr = 3e-4\n"
      "run_name = \"ablation  two\"  ; quoted keeps the spaces\n");
  for (auto args :
       std::vector<std::vector<std::string>>{{"--steps", "9", "--config", path}, {"--config=" + path, "--steps=9"}}) {
    Train t;
    ASSERT_TRUE(t.parse(args));
    EXPECT_EQ(t.config.steps, 9);  // command line wins over the file
    EXPECT_EQ(t.config.segment_len, 512);  // the file wins over the default, whatever its section
    EXPECT_DOUBLE_EQ(t.config.lr, 3e-4);
    EXPECT_EQ(t.config.run_name, "ablation  two");
    EXPECT_EQ(t.config.model, "models/tiny-llama");  // the default where neither says
  }
}

TEST(Options, DashedKeysReadAsSnakeCase) {
  Train t;
  ASSERT_TRUE(t.parse({"--segment-len", "64", "--run-name=x-y", "--use-memory=no"}));
  EXPECT_EQ(t.config.segment_len, 64);
  EXPECT_EQ(t.config.run_name, "x-y");
  EXPECT_FALSE(t.config.use_memory);
}

TEST(Options, NegativeNumbersAreValuesNotOptions) {
  Train t;
  ASSERT_TRUE(t.parse({"--steps", "-3", "--lr", "-1.5e-3"}));
  EXPECT_EQ(t.config.steps, -3);
  EXPECT_DOUBLE_EQ(t.config.lr, -1.5e-3);
}

TEST(Options, BoolsAcceptEveryDocumentedForm) {
  const std::vector<std::pair<std::vector<std::string>, bool>> cases = {
      {{"--verbose"}, true},     {{"--verbose=true"}, true},      {{"--verbose=1"}, true},
      {{"--verbose=yes"}, true}, {{"--verbose=false"}, false},    {{"--verbose=0"}, false},
      {{"--verbose=no"}, false}, {{"--verbose", "false"}, false}, {{"--verbose", "--steps", "2"}, true}};
  for (const auto& [args, want] : cases) {
    Train t;
    t.config.verbose = !want;
    ASSERT_TRUE(t.parse(args));
    EXPECT_EQ(t.config.verbose, want) << args[0];
  }
  for (const auto& [text, want] : std::vector<std::pair<std::string, bool>>{
           {"true", true}, {"1", true}, {"yes", true}, {"false", false}, {"0", false}, {"no", false}}) {
    Train t;
    ASSERT_TRUE(t.parse({"--config", write_ini("use_memory = " + text + "\n")}));
    EXPECT_EQ(t.config.use_memory, want) << text;
  }
  EXPECT_EQ(train_error({"--verbose=maybe"}), "bad value 'maybe' for '--verbose': expected true or false");
}

TEST(Options, UnknownCommandLineOptionSuggestsTheClosestKey) {
  EXPECT_EQ(train_error({"--segmnt_len", "5"}),
            "unknown option '--segmnt_len' for 'uio train'; did you mean '--segment_len'?");
  EXPECT_EQ(train_error({"--stepz=5"}), "unknown option '--stepz' for 'uio train'; did you mean '--steps'?");
  // Far from every key: no guess, but where to look.
  EXPECT_EQ(train_error({"--tokenizer", "x"}),
            "unknown option '--tokenizer' for 'uio train'; run 'uio train --help' to see the valid options");
  // Abbreviations are not guessed: a prefix is an unknown option, not a silent match.
  EXPECT_NE(train_error({"--segment", "5"}).find("unknown option '--segment'"), std::string::npos);
}

TEST(Options, UnknownIniKeyNamesFileLineSectionAndClosestKey) {
  auto path = write_ini("steps = 3\n\n[memory]\nsegmnt_len = 1024\n");
  EXPECT_EQ(train_error({"--config", path}),
            path + ":4: unknown key 'segmnt_len' (section [memory]) for 'uio train'; did you mean 'segment_len'?");
  auto far = write_ini("# header\nwarmup_ratio_for_schedule = 0.1\n", "far.ini");
  EXPECT_EQ(train_error({"--config", far}),
            far +
                ":2: unknown key 'warmup_ratio_for_schedule' for 'uio train'; run 'uio train --help' to see the "
                "valid keys");
}

// Keys users bring from other trainers (HF Trainer, PyTorch scripts) point to uio's name for them, when the
// command has that key; otherwise the usual closest-key rule applies.
TEST(Options, AnotherTrainersNameForAKeySuggestsUiosName) {
  auto ini = write_ini("learning_rate = 1e-4\n", "other.ini");
  EXPECT_EQ(train_error({"--config", ini}),
            ini + ":1: unknown key 'learning_rate' for 'uio train'; did you mean 'lr'?");
  EXPECT_EQ(train_error({"--max_steps", "5"}), "unknown option '--max_steps' for 'uio train'; did you mean '--steps'?");
  // This schema has no out_dir: no pointer to a key it lacks.
  EXPECT_EQ(train_error({"--output_dir", "x"}),
            "unknown option '--output_dir' for 'uio train'; run 'uio train --help' to see the valid options");
}

TEST(Options, BadValueNamesKeyValueAndExpectedType) {
  auto path = write_ini("[run]\nmodel = m\n\n# steps below\n\n\nsteps = abc\n");
  EXPECT_EQ(train_error({"--config", path}), path + ":7: bad value 'abc' for key 'steps': expected an integer");
  EXPECT_EQ(train_error({"--steps", "abc"}), "bad value 'abc' for '--steps': expected an integer");
  EXPECT_EQ(train_error({"--lr", "fast"}), "bad value 'fast' for '--lr': expected a number");
  EXPECT_EQ(train_error({"--lr", "1e999"}), "bad value '1e999' for '--lr': expected a number");
  // A failed parse leaves the struct as it was.
  Train t;
  EXPECT_THROW(t.parse({"--segment_len", "8", "--steps", "x"}), OptionError);
  EXPECT_EQ(t.config.segment_len, 1024);
}

TEST(Options, IntegersRejectTrailingTextFractionsAndOverflow) {
  for (std::string bad : {"12abc", "1.5", "", " 7", "9223372036854775808", "-9223372036854775809", "1e3"})
    EXPECT_FALSE(train_error({"--steps=" + bad}).empty()) << bad;
  EXPECT_EQ(train_error({"--steps", "9223372036854775808"}),
            "bad value '9223372036854775808' for '--steps': expected an integer");
  Train t;
  ASSERT_TRUE(t.parse({"--steps", "9223372036854775807", "--segment_len", "-9223372036854775808"}));
  EXPECT_EQ(t.config.steps, INT64_MAX);
  EXPECT_EQ(t.config.segment_len, INT64_MIN);
}

TEST(Options, MissingRequiredOptionIsNamed) {
  std::string model;
  Schema info("info", "Print a model's shapes.");
  info.add("model", &model, "model folder").required("model");
  std::ostringstream out;
  EXPECT_EQ(error_of([&] { info.parse({}, out); }),
            "missing required option '--model' for 'uio info' (give it on the command line or in the --config file)");
  ASSERT_TRUE(info.parse({"--config", write_ini("[info]\nmodel = models/a b\n")}, out));
  EXPECT_EQ(model, "models/a b");
}

TEST(Options, KeyGivenTwiceInIniNamesBothLines) {
  auto path = write_ini("[memory]\nsegment_len = 1\n\n[optim]\nlr = 1\nsegment_len = 2\n");
  EXPECT_EQ(train_error({"--config", path}), path + ":6: key 'segment_len' is given twice (first at line 2); keep one");
  EXPECT_EQ(train_error({"--steps", "1", "--steps", "2"}),
            "option '--steps' is given more than once on the command line");
}

TEST(Options, MissingConfigFileIsNamed) {
  auto path = (uio::test::scratch_dir() / "nope.ini").string();
  EXPECT_EQ(train_error({"--config", path}), "config file '" + path + "' (from --config) does not exist");
  EXPECT_EQ(
      train_error({"--config", uio::test::scratch_dir().string()}),
      "config file '" + uio::test::scratch_dir().string() + "' (from --config) is not a regular file (a directory?)");
}

TEST(Options, MalformedCommandLinesAreExplained) {
  EXPECT_EQ(train_error({"--steps", "3", "--lr"}), "missing value after '--lr' (write '--lr VALUE')");
  EXPECT_NE(train_error({"--model", "--steps", "3"}).find("missing value after '--model'"), std::string::npos);
  EXPECT_EQ(train_error({"--steps", "3", "extra"}),
            "unexpected argument 'extra' for 'uio train' (options are written '--key value')");
  EXPECT_NE(train_error({"-s", "3"}).find("unexpected argument '-s'"), std::string::npos);
}

TEST(Options, MalformedIniLinesNameFileAndLine) {
  auto words = write_ini("steps = 1\njust some words\n");
  EXPECT_EQ(train_error({"--config", words}),
            words + ":2: expected 'key = value' or '[section]', got 'just some words'");
  auto quote = write_ini("\nrun_name = \"open\n", "quote.ini");
  EXPECT_NE(train_error({"--config", quote}).find(quote + ":2: unterminated quoted value"), std::string::npos);
  auto header = write_ini("[memory\n", "header.ini");
  EXPECT_NE(train_error({"--config", header}).find(header + ":1: malformed section header '[memory'"),
            std::string::npos);
}

TEST(Options, ToIniRoundTripsThroughParse) {
  Train a;
  ASSERT_TRUE(a.parse({"--steps", "12", "--lr", "0.1", "--verbose", "--use_memory=no", "--segment_len", "-4"}));
  EXPECT_EQ(a.schema.to_ini(),
            "[train]\nmodel = models/tiny-llama\nsegment_len = -4\nsteps = 12\nlr = 0.1\nuse_memory = false\n"
            "verbose = true\nrun_name = first run\n");
  // Strings that need quotes, and a double with no short decimal form.
  for (std::string name :
       {"", " leading space", "a # not a comment", "semi;colon", "\"quoted\" \\ back", "two\nlines", "tab\tinside"}) {
    Train b;
    ASSERT_TRUE(b.parse({"--run_name", name, "--lr", "0.30000000000000004", "--model", "m=1"}));
    Train c;
    ASSERT_TRUE(c.parse({"--config", write_ini(b.schema.to_ini())}));
    EXPECT_EQ(c.config.run_name, name);
    EXPECT_EQ(c.config.lr, 0.30000000000000004);
    EXPECT_EQ(c.config.model, "m=1");
    EXPECT_EQ(c.schema.to_ini(), b.schema.to_ini());
  }
}

TEST(Options, HelpReturnsFalseAndListsEveryKey) {
  Train t;
  std::ostringstream out;
  EXPECT_FALSE(t.schema.parse({"--steps", "not-a-number", "--help"}, out));  // help wins, nothing parsed
  const std::string text = out.str();
  EXPECT_EQ(text, t.schema.help());
  EXPECT_EQ(text.rfind("usage: uio train", 0), 0u) << text;
  EXPECT_NE(text.find("Train the memory compressor."), std::string::npos);
  EXPECT_NE(text.find("--config FILE"), std::string::npos);
  EXPECT_NE(text.find("--help"), std::string::npos);
  for (std::string row : {"--model STRING", "--segment_len INT", "--steps INT", "--lr NUMBER", "--use_memory [BOOL]",
                          "--verbose [BOOL]", "--run_name STRING"})
    EXPECT_NE(text.find(row), std::string::npos) << row;
  EXPECT_NE(text.find("tokens per segment (default: 1024)"), std::string::npos) << text;
  EXPECT_NE(text.find("learning rate (default: 0.00025)"), std::string::npos) << text;
  EXPECT_NE(text.find("(default: first run)"), std::string::npos) << text;
  // Help texts start in one column.
  const auto col = text.find("optimiser steps") - text.rfind('\n', text.find("optimiser steps")) - 1;
  const auto col2 = text.find("learning rate") - text.rfind('\n', text.find("learning rate")) - 1;
  EXPECT_EQ(col, col2);
  EXPECT_EQ(t.config.steps, 300);
}

TEST(Options, EditDistanceIsLevenshtein) {
  using uio::cli::edit_distance;
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3);
  EXPECT_EQ(edit_distance("flaw", "lawn"), 2);
  EXPECT_EQ(edit_distance("", "abc"), 3);
  EXPECT_EQ(edit_distance("segment_len", "segment_len"), 0);
  EXPECT_EQ(edit_distance("segmnt_len", "segment_len"), 1);
  EXPECT_EQ(edit_distance("ab", "ba"), 2);  // no transpositions in plain Levenshtein
}

// Editors on Windows start UTF-8 files with a byte-order mark: the first key still reads as itself.
TEST(Options, AnIniFileStartingWithAUtf8ByteOrderMarkParses) {
  Train t;
  ASSERT_TRUE(t.parse({"--config", write_ini("\xEF\xBB\xBFsegment_len = 512\nsteps = 7\n")}));
  EXPECT_EQ(t.config.segment_len, 512);
  EXPECT_EQ(t.config.steps, 7);
  Train s;
  ASSERT_TRUE(s.parse({"--config", write_ini("\xEF\xBB\xBF[train]\nlr = 0.5\n")}));
  EXPECT_EQ(s.config.lr, 0.5);
}

// A --config that is a FIFO or a directory is refused by its type, before open() could block on it.
TEST(Options, AConfigThatIsAFifoOrADirectoryIsRefusedWithoutOpeningIt) {
  const auto dir = uio::test::scratch_dir();
  ASSERT_EQ(::mkfifo((dir / "fifo.ini").c_str(), 0600), 0);
  for (const auto& path : {dir / "fifo.ini", dir}) {
    const auto message = train_error({"--config", path.string()});
    EXPECT_NE(message.find("config file '" + path.string() + "' (from --config) is not a regular file"),
              std::string::npos)
        << message;
  }
}
