// Declarative command-line flags: each subcommand lists its flags in one table with defaults and
// help, then parses argv against it. The interface is the small subset of Boost.ProgramOptions
// that cllm uses (options_description / value / bool_switch / variables_map), written here so
// that cllm needs only Boost's headers (Asio, Beast), not its compiled libraries.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace cllm::flags {

class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// How one flag's text becomes a value.
class value_semantic {
 public:
  virtual ~value_semantic() = default;
  virtual void parse(const std::string& flag, const std::string& text) = 0;
  virtual bool is_switch() const { return false; }
  virtual std::string default_text() const = 0;  // "" when there is no default
  bool is_required() const { return required_; }

 protected:
  bool required_ = false;
};

template <class T>
class typed_value final : public value_semantic {
 public:
  explicit typed_value(T* target) : target_(target) {}
  typed_value* default_value(const T& v) {
    *target_ = v;
    std::ostringstream os;
    os << v;
    default_text_ = os.str();
    return this;
  }
  typed_value* required() {
    required_ = true;
    return this;
  }
  void parse(const std::string& flag, const std::string& text) override {
    if constexpr (std::is_same_v<T, std::string>) {
      *target_ = text;
    } else {
      // istream reads "-1" into an unsigned type as its largest value (strtoull's rule): refused.
      if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T> && !std::is_same_v<T, bool>)
        if (text.find('-') != std::string::npos)
          throw error("the argument ('" + text + "') for option '--" + flag + "' is invalid: it cannot be negative");
      std::istringstream is(text);
      T v{};
      is >> v;
      if (is.fail() || !is.eof())
        throw error("the argument ('" + text + "') for option '--" + flag + "' is invalid");
      *target_ = v;
    }
  }
  std::string default_text() const override { return default_text_; }

 private:
  T* target_;
  std::string default_text_;
};

// A flag without a value: present means true.
class switch_value final : public value_semantic {
 public:
  explicit switch_value(bool* target) : target_(target) { *target_ = false; }
  void parse(const std::string&, const std::string&) override { *target_ = true; }
  bool is_switch() const override { return true; }
  std::string default_text() const override { return ""; }

 private:
  bool* target_;
};

template <class T>
typed_value<T>* value(T* target) {
  return new typed_value<T>(target);
}
inline switch_value* bool_switch(bool* target) { return new switch_value(target); }

class options_description {
 public:
  struct option {
    std::string name;   // long name, used as --name
    char short_name;    // 0 when none
    std::shared_ptr<value_semantic> value;  // null for a plain presence flag (e.g. --help)
    std::string help;
  };

  class adder {
   public:
    explicit adder(options_description& d) : d_(d) {}
    // name: "long" or "long,s"; takes ownership of v.
    adder& operator()(const char* name, value_semantic* v, const std::string& help);
    adder& operator()(const char* name, const std::string& help) { return (*this)(name, nullptr, help); }

   private:
    options_description& d_;
  };

  explicit options_description(std::string title) : title_(std::move(title)) {}
  adder add_options() { return adder(*this); }
  const std::vector<option>& options() const { return options_; }
  const option* find(const std::string& name) const;
  const option* find_short(char c) const;
  friend std::ostream& operator<<(std::ostream& os, const options_description& d);

 private:
  std::string title_;
  std::vector<option> options_;
};

// Which flags were given (or have defaults, as Boost counts them).
class variables_map {
 public:
  const options_description* desc = nullptr;  // the table of the last store(), for notify()

  // Given on the command line or holding a default value.
  size_t count(const std::string& name) const { return present_.count(name); }
  // Given on the command line.
  bool given(const std::string& name) const {
    const auto it = present_.find(name);
    return it != present_.end() && it->second;
  }
  void mark(const std::string& name, bool given) { present_[name] = present_[name] || given; }

 private:
  std::map<std::string, bool> present_;  // name -> given on the command line
};

struct parsed_options {
  const options_description* desc = nullptr;
  std::vector<std::pair<std::string, std::string>> values;  // (long name, text) in order
};

class command_line_parser {
 public:
  // argv[0] is the program or subcommand name and is skipped.
  command_line_parser(int argc, char** argv) : argc_(argc), argv_(argv) {}
  command_line_parser& options(const options_description& d) {
    desc_ = &d;
    return *this;
  }
  parsed_options run();  // throws flags::error naming the bad flag

 private:
  int argc_;
  char** argv_;
  const options_description* desc_ = nullptr;
};

// Applies parsed values to their targets and records what was given.
void store(const parsed_options& parsed, variables_map& vm);
// Checks that every required flag was given.
void notify(variables_map& vm);

}  // namespace cllm::flags
