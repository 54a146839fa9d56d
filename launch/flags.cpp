#include "launch/flags.h"

#include <iomanip>

namespace cllm::flags {
options_description::adder& options_description::adder::operator()(const char* name, value_semantic* v,
                                                                    const std::string& help) {
  std::string n = name;
  char short_name = 0;
  if (const size_t comma = n.find(','); comma != std::string::npos) {
    short_name = n[comma + 1];
    n = n.substr(0, comma);
  }
  d_.options_.push_back({n, short_name, std::shared_ptr<value_semantic>(v), help});
  return *this;
}

const options_description::option* options_description::find(const std::string& name) const {
  for (const option& o : options_)
    if (o.name == name) return &o;
  return nullptr;
}

const options_description::option* options_description::find_short(char c) const {
  for (const option& o : options_)
    if (o.short_name == c) return &o;
  return nullptr;
}

std::ostream& operator<<(std::ostream& os, const options_description& d) {
  os << d.title_ << ":\n";
  for (const options_description::option& o : d.options_) {
    std::string left = "  --" + o.name;
    if (o.short_name) left = "  -" + std::string(1, o.short_name) + " [ --" + o.name + " ]";
    if (o.value && !o.value->is_switch()) left += " arg";
    if (o.value && !o.value->default_text().empty()) left += " (=" + o.value->default_text() + ")";
    if (o.value && o.value->is_required()) left += " (required)";
    os << std::left << std::setw(44) << left << " " << o.help << "\n";
  }
  return os;
}

parsed_options command_line_parser::run() {
  parsed_options out;
  out.desc = desc_;
  for (int i = 1; i < argc_; ++i) {
    std::string arg = argv_[i];
    const options_description::option* opt = nullptr;
    std::string text;
    bool inline_value = false;
    if (arg.rfind("--", 0) == 0) {
      std::string name = arg.substr(2);
      if (const size_t eq = name.find('='); eq != std::string::npos) {
        text = name.substr(eq + 1);
        name = name.substr(0, eq);
        inline_value = true;
      }
      opt = desc_->find(name);
    } else if (arg.size() == 2 && arg[0] == '-') {
      opt = desc_->find_short(arg[1]);
    } else {
      throw error("unexpected argument '" + arg + "' (flags start with --)");
    }
    if (!opt) throw error("unrecognised option '" + arg + "'");
    const bool takes_value = opt->value && !opt->value->is_switch();
    if (takes_value && !inline_value) {
      if (i + 1 >= argc_) throw error("the required argument for option '--" + opt->name + "' is missing");
      text = argv_[++i];
    } else if (!takes_value && inline_value) {
      throw error("option '--" + opt->name + "' does not take a value");
    }
    out.values.emplace_back(opt->name, text);
  }
  return out;
}

void store(const parsed_options& parsed, variables_map& vm) {
  for (const auto& [name, text] : parsed.values) {
    const options_description::option* opt = parsed.desc->find(name);
    if (opt->value) opt->value->parse(name, text);
    vm.mark(name, true);
  }
  for (const options_description::option& o : parsed.desc->options())
    if (o.value && !o.value->default_text().empty()) vm.mark(o.name, false);
  vm.desc = parsed.desc;
}

void notify(variables_map& vm) {
  if (!vm.desc) return;
  for (const options_description::option& o : vm.desc->options())
    if (o.value && o.value->is_required() && !vm.count(o.name))
      throw error("the option '--" + o.name + "' is required but missing");
}

}  // namespace cllm::flags
