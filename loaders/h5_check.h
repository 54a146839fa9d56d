// The HDF5 pieces every HDF5 user in loaders/ shares (trajectories, the cllm checkpoint): the
// CLLM_H5 check macro, an owning id handle, and scalar/string attribute helpers. Internal to
// loaders/ (not part of its interface). HDF5 C API 1.10+.
#pragma once
#include <hdf5.h>

#include <algorithm>

#include <string>

#include "core/check.h"

namespace cllm::detail {

// HDF5 closes every id still open in an atexit handler. A file whose write or close failed (a full
// disk) stays open in the library, and closing it again at exit crashed (H5F__close_cb, SIGSEGV)
// after cllm had reported the error. Every file is closed through H5Handle or a reader's destructor,
// so the handler has nothing to do on success: it is turned off before HDF5's first call.
inline const bool kH5NoCloseAtExit = H5dont_atexit() >= 0;

// The messages of HDF5's current error stack, innermost last: " (HDF5: a; b; c)", or "" when empty.
// Call it right after the failing call: the next HDF5 API call clears the stack.
inline std::string h5_error_text() {
  std::string text;
  const auto walk = [](unsigned, const H5E_error2_t* e, void* out) -> herr_t {
    auto& s = *static_cast<std::string*>(out);
    std::string d = e->desc ? e->desc : "";
    // A failed system call's message spans lines (time, buffer address, byte counts): keep the
    // file and the system's message, e.g. "'/x/t.h5': No space left on device".
    const auto quoted = [&d](const char* key) {
      const size_t at = d.find(key);
      if (at == std::string::npos) return std::string();
      const size_t from = at + std::string(key).size(), to = d.find('\'', from);
      return to == std::string::npos ? std::string() : d.substr(from, to - from);
    };
    const std::string sys = quoted("error message = '");
    const std::string file = quoted("filename = '");
    if (!sys.empty()) d = (file.empty() ? "" : "'" + file + "': ") + sys;
    if (!d.empty() && s.find(d) == std::string::npos) s += (s.empty() ? "" : "; ") + d;
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk, &text);
  return text.empty() ? "" : " (HDF5: " + text + ")";
}

// While alive, HDF5 does not print its error stack to stderr; failures still throw through
// CLLM_H5 with the stack's messages in the text.
class H5QuietErrors {
 public:
  H5QuietErrors() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~H5QuietErrors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  H5QuietErrors(const H5QuietErrors&) = delete;
  H5QuietErrors& operator=(const H5QuietErrors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

}  // namespace cllm::detail

// CLLM_H5(call): throws with the call text and HDF5's messages when a call returns a negative
// id/status; otherwise yields the call's value.
#define CLLM_H5(call)                                                                               \
  ([&] {                                                                                            \
    const auto cllm_h5_r_ = (call);                                                                 \
    CLLM_CHECK(cllm_h5_r_ >= 0, "HDF5 call failed: " << #call << ::cllm::detail::h5_error_text()); \
    return cllm_h5_r_;                                                                              \
  }())

namespace cllm::detail {

// Owns one HDF5 id and closes it with the matching H5?close.
class H5Handle {
 public:
  H5Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~H5Handle() {
    if (id_ >= 0) close_(id_);
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  operator hid_t() const { return id_; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

inline bool h5_link_exists(hid_t loc, const std::string& name) {
  htri_t r = 0;
  H5E_BEGIN_TRY { r = H5Lexists(loc, name.c_str(), H5P_DEFAULT); }
  H5E_END_TRY;
  return r > 0;
}

template <typename T>
void h5_write_attr(hid_t obj, const char* name, hid_t type, T value) {
  H5Handle space(CLLM_H5(H5Screate(H5S_SCALAR)), H5Sclose);
  H5Handle attr(CLLM_H5(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT)), H5Aclose);
  CLLM_H5(H5Awrite(attr, type, &value));
}

// A fixed-length UTF-8 string attribute (h5py reads it as bytes). Fixed, not variable-length: a
// variable-length string lives in the file's global heap, which carries no checksum, and HDF5
// follows a damaged heap reference wherever it points (a crash, not an error); a fixed string sits in
// the attribute's own header message, read with the bounds the header gives.
inline void h5_write_string_attr(hid_t obj, const char* name, const std::string& value) {
  H5Handle type(CLLM_H5(H5Tcopy(H5T_C_S1)), H5Tclose);
  CLLM_H5(H5Tset_size(type, std::max<size_t>(value.size(), 1)));  // HDF5 refuses a 0-byte string type
  CLLM_H5(H5Tset_strpad(type, H5T_STR_NULLPAD));
  CLLM_H5(H5Tset_cset(type, H5T_CSET_UTF8));
  H5Handle space(CLLM_H5(H5Screate(H5S_SCALAR)), H5Sclose);
  H5Handle attr(CLLM_H5(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT)), H5Aclose);
  std::string padded = value;
  padded.resize(std::max<size_t>(value.size(), 1), '\0');
  CLLM_H5(H5Awrite(attr, type, padded.data()));
}

// A scalar attribute converted to `type`; `where` names the file/object in messages.
template <typename T>
T h5_read_attr(hid_t obj, const char* name, hid_t type, const std::string& where) {
  CLLM_CHECK(H5Aexists(obj, name) > 0, where << ": missing attribute '" << name << "'");
  H5Handle attr(CLLM_H5(H5Aopen(obj, name, H5P_DEFAULT)), H5Aclose);
  H5Handle space(CLLM_H5(H5Aget_space(attr)), H5Sclose);
  CLLM_CHECK(H5Sget_simple_extent_npoints(space) == 1, where << ": attribute '" << name << "' is not a scalar");
  T value{};
  CLLM_H5(H5Aread(attr, type, &value));
  return value;
}

// A string attribute, fixed-length (what cllm writes) or variable-length (files written before, and
// by other tools).
inline std::string h5_read_string_attr(hid_t obj, const char* name, const std::string& where) {
  CLLM_CHECK(H5Aexists(obj, name) > 0, where << ": missing attribute '" << name << "'");
  H5Handle attr(CLLM_H5(H5Aopen(obj, name, H5P_DEFAULT)), H5Aclose);
  H5Handle space(CLLM_H5(H5Aget_space(attr)), H5Sclose);
  H5Handle ftype(CLLM_H5(H5Aget_type(attr)), H5Tclose);
  CLLM_CHECK(H5Tget_class(ftype) == H5T_STRING && H5Sget_simple_extent_npoints(space) == 1,
             where << ": attribute '" << name << "' is not a string");
  if (H5Tis_variable_str(ftype) <= 0) {
    const size_t size = H5Tget_size(ftype);
    CLLM_CHECK(size > 0 && size <= (size_t{1} << 30), where << ": attribute '" << name << "' has a string size of "
                                                             << size << " bytes");
    std::string s(size, '\0');
    H5Handle type(CLLM_H5(H5Tcopy(ftype)), H5Tclose);
    CLLM_H5(H5Aread(attr, type, s.data()));
    s.resize(std::min(s.size(), s.find('\0')));  // NULLPAD and NULLTERM both end at the first NUL
    return s;
  }
  H5Handle type(CLLM_H5(H5Tcopy(H5T_C_S1)), H5Tclose);
  CLLM_H5(H5Tset_size(type, H5T_VARIABLE));
  CLLM_H5(H5Tset_cset(type, H5Tget_cset(ftype)));  // HDF5 converts neither UTF-8 to ASCII nor back
  char* p = nullptr;
  CLLM_H5(H5Aread(attr, type, &p));
  std::string s = p ? p : "";
  H5free_memory(p);
  return s;
}

}  // namespace cllm::detail
