// torch.save reader: zip directory -> pickle VM (opcode subset of protocols 2-5, see
// Lib/pickletools.py) -> PyObj tree with lazy tensors. The VM only builds data: a GLOBAL
// resolves to a name from the allow-list, and REDUCE/BUILD interpret those few names here.
#include "weights/torch_pickle.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <unordered_map>

namespace ms {

using Kind = PyObj::Kind;

// Every object the pickle VM creates, so that reference cycles can be found and broken
// (set by TorchCheckpoint around the VM's run; one VM per thread at a time).
static thread_local std::vector<std::weak_ptr<PyObj>>* g_created = nullptr;

static PyRef make(Kind k) {
  auto o = std::make_shared<PyObj>();
  o->kind = k;
  if (g_created) g_created->push_back(o);
  return o;
}

// True when a container can reach itself (iterative three-colour DFS over items and dict).
static bool has_cycle(const std::vector<std::weak_ptr<PyObj>>& objs) {
  std::unordered_map<const PyObj*, int> colour;  // absent: unvisited, 1: on the path, 2: done
  auto children = [](const PyObj* o) {
    std::vector<const PyObj*> c;
    for (const auto& v : o->items) c.push_back(v.get());
    for (const auto& kv : o->dict) c.push_back(kv.first.get()), c.push_back(kv.second.get());
    return c;
  };
  for (const auto& w : objs) {
    PyRef start = w.lock();
    if (!start || colour.count(start.get())) continue;
    std::vector<std::pair<const PyObj*, std::vector<const PyObj*>>> stack;
    stack.emplace_back(start.get(), children(start.get()));
    colour[start.get()] = 1;
    while (!stack.empty()) {
      auto& [o, rest] = stack.back();
      if (rest.empty()) {
        colour[o] = 2;
        stack.pop_back();
        continue;
      }
      const PyObj* c = rest.back();
      rest.pop_back();
      if (!c) continue;
      auto it = colour.find(c);
      if (it != colour.end()) {
        if (it->second == 1) return true;
        continue;
      }
      colour[c] = 1;
      stack.emplace_back(c, children(c));
    }
  }
  return false;
}

// Empties every container still alive, so shared_ptr cycles are freed.
static void break_all(const std::vector<std::weak_ptr<PyObj>>& objs) {
  for (const auto& w : objs)
    if (PyRef o = w.lock()) {
      o->items.clear();
      o->dict.clear();
    }
}
static PyRef make_int(int64_t v) {
  auto o = make(Kind::Int);
  o->i = v;
  return o;
}
static PyRef make_str(Kind k, std::string s) {
  auto o = make(k);
  o->s = std::move(s);
  return o;
}

static const char* kind_name(Kind k) {
  switch (k) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::List: return "list";
    case Kind::Tuple: return "tuple";
    case Kind::Dict: return "dict";
    case Kind::Set: return "set";
    case Kind::Tensor: return "tensor";
    case Kind::Global: return "global";
    case Kind::Storage: return "storage";
    case Kind::Opaque: return "object";
  }
  return "?";
}

PyRef PyObj::get(const std::string& key) const {
  if (kind != Kind::Dict) return nullptr;
  for (const auto& [k, v] : dict)
    if (k->kind == Kind::Str && k->s == key) return v;
  return nullptr;
}

std::string PyObj::key_text(const PyRef& k) {
  if (k->kind == Kind::Str) return k->s;
  if (k->kind == Kind::Int) return std::to_string(k->i);
  return k->repr(40);
}

static std::string dtype_of_tensor_repr(const TorchTensorRef& t) { return t.dtype + shape_str(t.shape); }

std::string PyObj::repr(size_t max_len) const {
  if (max_len < 4) return "...";
  std::string r;
  switch (kind) {
    case Kind::None: r = "None"; break;
    case Kind::Bool: r = i ? "True" : "False"; break;
    case Kind::Int: r = std::to_string(i); break;
    case Kind::Float: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.6g", f);
      r = buf;
      break;
    }
    case Kind::Str: r = "'" + s + "'"; break;
    case Kind::Bytes: r = "b<" + std::to_string(s.size()) + " bytes>"; break;
    case Kind::List:
    case Kind::Tuple:
    case Kind::Set: {
      const char* open = kind == Kind::List ? "[" : kind == Kind::Tuple ? "(" : "{";
      const char* close = kind == Kind::List ? "]" : kind == Kind::Tuple ? ")" : "}";
      r = open;
      // Each level gets only the room left, so a deeply nested list (pickle fuzzer: a stack
      // overflow here) stops after at most max_len levels.
      for (size_t k = 0; k < items.size() && r.size() < max_len; ++k)
        r += (k ? ", " : "") + items[k]->repr(max_len - r.size());
      r += close;
      break;
    }
    case Kind::Dict: r = "{dict: " + std::to_string(dict.size()) + " items}"; break;
    case Kind::Tensor: r = "tensor " + dtype_of_tensor_repr(tensor); break;
    case Kind::Global: r = "<global " + s + ">"; break;
    case Kind::Storage: r = "<storage " + tensor.dtype + ">"; break;
    case Kind::Opaque: r = "<" + s + " object (skipped)>"; break;
  }
  if (r.size() > max_len) r = r.substr(0, max_len - 3) + "...";
  return r;
}

// ---- the allow-list -----------------------------------------------------------------

static const std::map<std::string, std::string>& storage_dtypes() {
  static const std::map<std::string, std::string> m = {{"torch.FloatStorage", "F32"}, {"torch.DoubleStorage", "F64"},
                                                       {"torch.HalfStorage", "F16"},  {"torch.BFloat16Storage", "BF16"},
                                                       {"torch.LongStorage", "I64"},  {"torch.IntStorage", "I32"},
                                                       {"torch.ShortStorage", "I16"}, {"torch.CharStorage", "I8"},
                                                       {"torch.ByteStorage", "U8"},   {"torch.BoolStorage", "BOOL"}};
  return m;
}

static bool is_allowed_callable(const std::string& n) {
  return n == "collections.OrderedDict" || n == "torch._utils._rebuild_tensor_v2" ||
         n == "torch._utils._rebuild_tensor" || n == "torch._utils._rebuild_parameter" ||
         n == "torch._utils._rebuild_parameter_with_state" || n == "builtins.set" || n == "builtins.frozenset" ||
         n == "__builtin__.set" || n == "__builtin__.frozenset" || n == "torch.Size";
}

// ---- the VM ---------------------------------------------------------------------------

namespace {

class PickleVM {
 public:
  PickleVM(const std::string& path, const std::vector<uint8_t>& data, const TorchLoadOptions& opt,
           std::function<int64_t(const std::string& key, const std::string& dtype)> storage_numel)
      : path_(path), d_(data), opt_(opt), storage_numel_(std::move(storage_numel)) {}

  PyRef run() {
    while (true) {
      if (pos_ >= d_.size()) fail("pickle ends without STOP (truncated data.pkl)");
      op_pos_ = pos_;
      uint8_t op = d_[pos_++];
      switch (op) {
        case 0x80: take(1); break;  // PROTO
        case 0x95: take(8); break;  // FRAME: a length hint only
        case '.': {                 // STOP
          PyRef r = pop();
          return r;
        }
        case '(': marks_.push_back(stack_.size()); break;  // MARK
        case '0': pop(); break;                            // POP
        case '1': pop_mark(); break;                       // POP_MARK
        case '2': push(top()); break;                      // DUP
        case '}': push(make(Kind::Dict)); break;
        case ']': push(make(Kind::List)); break;
        case ')': push(make(Kind::Tuple)); break;
        case 0x8f: push(make(Kind::Set)); break;  // EMPTY_SET
        case 'N': push(make(Kind::None)); break;
        case 0x88:
        case 0x89: {  // NEWTRUE / NEWFALSE
          auto b = make(Kind::Bool);
          b->i = op == 0x88;
          push(b);
          break;
        }
        case 'J': push(make_int(int32_t(le(4)))); break;  // BININT
        case 'K': push(make_int(int64_t(le(1)))); break;  // BININT1
        case 'M': push(make_int(int64_t(le(2)))); break;  // BININT2
        case 0x8a: push(long_int(le(1))); break;          // LONG1
        case 0x8b: push(long_int(le(4))); break;          // LONG4
        case 'G': {                                       // BINFLOAT, big-endian
          const uint8_t* p = take(8);
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | p[k];
          auto o = make(Kind::Float);
          std::memcpy(&o->f, &bits, 8);
          push(o);
          break;
        }
        case 'X': push(text(Kind::Str, le(4))); break;     // BINUNICODE
        case 0x8c: push(text(Kind::Str, le(1))); break;    // SHORT_BINUNICODE
        case 0x8d: push(text(Kind::Str, le(8))); break;    // BINUNICODE8
        case 'T': push(text(Kind::Str, le(4))); break;     // BINSTRING (py2 str)
        case 'U': push(text(Kind::Str, le(1))); break;     // SHORT_BINSTRING
        case 'B': push(text(Kind::Bytes, le(4))); break;   // BINBYTES
        case 'C': push(text(Kind::Bytes, le(1))); break;   // SHORT_BINBYTES
        case 0x8e: push(text(Kind::Bytes, le(8))); break;  // BINBYTES8
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1/2/3
          size_t n = size_t(op - 0x84);
          if (stack_.size() < n + floor())
            fail("TUPLE" + std::to_string(n) + " on a stack of " + std::to_string(stack_.size()));
          auto t = make(Kind::Tuple);
          t->items.assign(stack_.end() - long(n), stack_.end());
          stack_.resize(stack_.size() - n);
          push(t);
          break;
        }
        case 't': {
          auto t = make(Kind::Tuple);
          t->items = pop_mark();
          push(t);
          break;
        }
        case 'l': {
          auto t = make(Kind::List);
          t->items = pop_mark();
          push(t);
          break;
        }
        case 'd': {
          auto items = pop_mark();
          auto t = make(Kind::Dict);
          set_items(t, items);
          push(t);
          break;
        }
        case 's': {  // SETITEM
          PyRef v = pop(), k = pop();
          set_items(top(), {k, v});
          break;
        }
        case 'u': {  // SETITEMS
          auto items = pop_mark();
          set_items(top(), items);
          break;
        }
        case 'a': {  // APPEND
          PyRef v = pop();
          append(top(), {v});
          break;
        }
        case 'e': {  // APPENDS
          auto items = pop_mark();
          append(top(), items);
          break;
        }
        case 0x90: {  // ADDITEMS
          auto items = pop_mark();
          PyRef s = top();
          if (s->kind != Kind::Set) fail(std::string("ADDITEMS on a ") + kind_name(s->kind));
          s->items.insert(s->items.end(), items.begin(), items.end());
          break;
        }
        case 0x91: {  // FROZENSET
          auto t = make(Kind::Set);
          t->items = pop_mark();
          push(t);
          break;
        }
        case 'q': memo_[uint32_t(le(1))] = top(); break;          // BINPUT
        case 'r': memo_[uint32_t(le(4))] = top(); break;          // LONG_BINPUT
        case 0x94: memo_[uint32_t(memo_.size())] = top(); break;  // MEMOIZE
        case 'h': push(memo(le(1))); break;                       // BINGET
        case 'j': push(memo(le(4))); break;                       // LONG_BINGET
        case 'c': {                                               // GLOBAL "module\nname\n"
          std::string mod = line(), name = line();
          push(global(mod, name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          PyRef name = pop(), mod = pop();
          if (!mod->is_str() || !name->is_str()) fail("STACK_GLOBAL expects two strings");
          push(global(mod->s, name->s));
          break;
        }
        case 'R': {  // REDUCE
          PyRef args = pop(), fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 0x81: {  // NEWOBJ cls.__new__(cls, *args)
          PyRef args = pop(), cls = pop();
          if (cls->kind != Kind::Opaque) fail("NEWOBJ on " + cls->repr());
          push(make_str(Kind::Opaque, cls->s));
          break;
        }
        case 'b': {  // BUILD: obj.__setstate__(state) — only attribute state, ignored
          PyRef state = pop();
          PyRef obj = top();
          if (obj->kind != Kind::Dict && obj->kind != Kind::Tensor && obj->kind != Kind::Opaque)
            fail(std::string("BUILD on a ") + kind_name(obj->kind));
          break;
        }
        case 'Q': {  // BINPERSID
          PyRef pid = pop();
          push(persistent_load(pid));
          break;
        }
        default: {
          char buf[8];
          std::snprintf(buf, sizeof buf, "0x%02x", op);
          fail(std::string("unsupported pickle opcode ") + buf +
               (op >= 32 && op < 127 ? std::string(" ('") + char(op) + "')" : std::string()) +
               " (not a state-dict pickle, or a corrupt file)");
        }
      }
    }
  }

 private:
  const std::string& path_;
  const std::vector<uint8_t>& d_;
  TorchLoadOptions opt_;
  std::function<int64_t(const std::string&, const std::string&)> storage_numel_;
  size_t pos_ = 0, op_pos_ = 0;
  std::vector<PyRef> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, PyRef> memo_;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(path_ + ": data.pkl at byte " + std::to_string(op_pos_) + ": " + what);
  }
  const uint8_t* take(uint64_t n) {
    if (n > d_.size() - pos_) fail("truncated pickle (needs " + std::to_string(n) + " more bytes)");
    const uint8_t* p = d_.data() + pos_;
    pos_ += size_t(n);
    return p;
  }
  uint64_t le(int n) {
    const uint8_t* p = take(uint64_t(n));
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | p[k];
    return v;
  }
  std::string line() {
    std::string s;
    while (true) {
      if (pos_ >= d_.size()) fail("truncated GLOBAL name");
      char c = char(d_[pos_++]);
      if (c == '\n') return s;
      s += c;
      if (s.size() > 256) fail("GLOBAL name too long");
    }
  }
  PyRef text(Kind k, uint64_t n) {
    const uint8_t* p = take(n);
    return make_str(k, std::string(reinterpret_cast<const char*>(p), size_t(n)));
  }
  PyRef long_int(uint64_t n) {  // little-endian two's complement of n bytes
    const uint8_t* p = take(n);
    if (n == 0) return make_int(0);
    if (n > 8) return make_str(Kind::Opaque, "int(" + std::to_string(n) + " bytes)");
    uint64_t v = 0;
    for (int k = int(n) - 1; k >= 0; --k) v = (v << 8) | p[k];
    if (n < 8 && (p[n - 1] & 0x80)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
    return make_int(int64_t(v));
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(PyRef o) {
    if (stack_.size() > (1u << 24)) fail("pickle stack overflow");
    stack_.push_back(std::move(o));
  }
  PyRef pop() {
    if (stack_.size() <= floor()) fail("pop from an empty pickle stack");
    PyRef o = stack_.back();
    stack_.pop_back();
    return o;
  }
  PyRef top() const {
    if (stack_.size() <= floor()) fail("empty pickle stack");
    return stack_.back();
  }
  std::vector<PyRef> pop_mark() {
    if (marks_.empty()) fail("no MARK on the pickle stack");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PyRef> items(stack_.begin() + long(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  PyRef memo(uint64_t k) {
    auto it = memo_.find(uint32_t(k));
    if (it == memo_.end()) fail("memo key " + std::to_string(k) + " not defined");
    return it->second;
  }
  void set_items(const PyRef& d, const std::vector<PyRef>& kv) {
    if (kv.size() % 2) fail("SETITEMS with an odd number of items");
    if (d->kind == Kind::Opaque) return;
    if (d->kind != Kind::Dict) fail(std::string("SETITEM on a ") + kind_name(d->kind));
    for (size_t k = 0; k < kv.size(); k += 2) {
      bool replaced = false;
      if (kv[k]->is_str() || kv[k]->kind == Kind::Int)
        for (auto& [key, val] : d->dict)
          if (key->kind == kv[k]->kind && key->s == kv[k]->s && key->i == kv[k]->i) {
            val = kv[k + 1];
            replaced = true;
          }
      if (!replaced) d->dict.emplace_back(kv[k], kv[k + 1]);
    }
  }
  void append(const PyRef& l, const std::vector<PyRef>& items) {
    if (l->kind == Kind::Opaque) return;
    if (l->kind != Kind::List) fail(std::string("APPEND on a ") + kind_name(l->kind));
    l->items.insert(l->items.end(), items.begin(), items.end());
  }

  PyRef global(const std::string& mod, const std::string& name) {
    std::string full = mod + "." + name;
    if (is_allowed_callable(full) || storage_dtypes().count(full)) return make_str(Kind::Global, full);
    if (full == "torch.storage._load_from_bytes")
      fail(
          "unsupported pickle global 'torch.storage._load_from_bytes' (a storage pickled as bytes by an old or "
          "non-zip torch.save); re-save it with a current torch: torch.save(torch.load(f), g)");
    if (opt_.allow_unknown_globals) return make_str(Kind::Opaque, full);
    fail("unsupported pickle global '" + full +
         "' (only tensors, OrderedDict and plain Python values are read; nothing is executed — "
         "--allow-unknown-globals skips such objects)");
  }

  static const std::vector<PyRef>& tuple_items(const PyRef& t) { return t->items; }

  int64_t as_int(const PyRef& o, const char* what) const {
    if (o->kind != Kind::Int && o->kind != Kind::Bool) fail(std::string(what) + " must be an int, got " + o->repr());
    return o->i;
  }
  std::vector<int64_t> as_ints(const PyRef& o, const char* what) const {
    if (o->kind != Kind::Tuple && o->kind != Kind::List)
      fail(std::string(what) + " must be a tuple of ints, got " + o->repr());
    std::vector<int64_t> v;
    for (const auto& x : o->items) v.push_back(as_int(x, what));
    return v;
  }

  PyRef rebuild_tensor(const std::vector<PyRef>& a, const char* fn) {
    if (a.size() < 4)
      fail(std::string(fn) + " expects (storage, offset, size, stride, ...), got " + std::to_string(a.size()) +
           " args");
    if (a[0]->kind != Kind::Storage) fail(std::string(fn) + ": first argument must be a storage, got " + a[0]->repr());
    auto t = make(Kind::Tensor);
    TorchTensorRef& r = t->tensor;
    r.storage_key = a[0]->tensor.storage_key;
    r.dtype = a[0]->tensor.dtype;
    r.storage_numel = a[0]->tensor.storage_numel;
    r.offset = as_int(a[1], "storage_offset");
    r.shape = as_ints(a[2], "size");
    r.stride = as_ints(a[3], "stride");
    if (r.shape.size() != r.stride.size())
      fail(std::string(fn) + ": size " + shape_str(r.shape) + " and stride " + shape_str(r.stride) + " differ in rank");
    // The view must lie inside its storage: offset + sum((size-1)*stride) < storage numel.
    int64_t numel = 1, last = r.offset;
    bool overflow = r.offset < 0;
    for (size_t k = 0; k < r.shape.size(); ++k) {
      if (r.shape[k] < 0 || r.stride[k] < 0) overflow = true;
      if (__builtin_mul_overflow(numel, r.shape[k], &numel)) overflow = true;
    }
    if (!overflow && numel > 0)
      for (size_t k = 0; k < r.shape.size(); ++k) {
        int64_t ext;
        if (__builtin_mul_overflow(r.shape[k] - 1, r.stride[k], &ext) || __builtin_add_overflow(last, ext, &last))
          overflow = true;
      }
    if (overflow || (numel > 0 && last >= r.storage_numel))
      fail("tensor view (offset " + std::to_string(r.offset) + ", size " + shape_str(r.shape) + ", stride " +
           shape_str(r.stride) + ") lies outside its storage '" + r.storage_key + "' of " +
           std::to_string(r.storage_numel) + " elements");
    return t;
  }

  PyRef reduce(const PyRef& fn, const PyRef& args) {
    if (fn->kind == Kind::Opaque) return make_str(Kind::Opaque, fn->s);
    if (fn->kind != Kind::Global) fail("REDUCE on a " + std::string(kind_name(fn->kind)) + " (" + fn->repr() + ")");
    if (args->kind != Kind::Tuple) fail("REDUCE " + fn->s + ": arguments must be a tuple");
    const auto& a = tuple_items(args);
    const std::string& n = fn->s;
    if (n == "collections.OrderedDict") {
      auto d = make(Kind::Dict);
      if (!a.empty()) {  // OrderedDict([(k, v), ...])
        if (a[0]->kind != Kind::List && a[0]->kind != Kind::Tuple) fail("OrderedDict argument must be a list of pairs");
        for (const auto& kv : a[0]->items) {
          if (kv->kind != Kind::Tuple || kv->items.size() != 2) fail("OrderedDict argument must be a list of pairs");
          set_items(d, {kv->items[0], kv->items[1]});
        }
      }
      return d;
    }
    if (n == "torch._utils._rebuild_tensor_v2" || n == "torch._utils._rebuild_tensor")
      return rebuild_tensor(a, n.c_str());
    if (n == "torch._utils._rebuild_parameter" || n == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != Kind::Tensor) fail(n + ": first argument must be a tensor");
      auto t = make(Kind::Tensor);
      t->tensor = a[0]->tensor;
      t->tensor.parameter = true;
      return t;
    }
    if (n == "builtins.set" || n == "builtins.frozenset" || n == "__builtin__.set" || n == "__builtin__.frozenset") {
      auto s = make(Kind::Set);
      if (!a.empty()) s->items = a[0]->items;
      return s;
    }
    if (n == "torch.Size") {
      auto t = make(Kind::Tuple);
      if (!a.empty()) t->items = a[0]->items;
      return t;
    }
    fail("'" + n + "' is not callable here");
  }

  PyRef persistent_load(const PyRef& pid) {
    // torch.serialization: ('storage', storage_type, key, location, numel)
    if (pid->kind != Kind::Tuple || pid->items.size() < 5 || !pid->items[0]->is_str() || pid->items[0]->s != "storage")
      fail("persistent id must be ('storage', type, key, location, numel), got " + pid->repr());
    const PyRef& type = pid->items[1];
    auto it = type->kind == Kind::Global ? storage_dtypes().find(type->s) : storage_dtypes().end();
    if (it == storage_dtypes().end()) fail("unsupported storage type " + type->repr());
    if (!pid->items[2]->is_str()) fail("storage key must be a string, got " + pid->items[2]->repr());
    auto s = make(Kind::Storage);
    s->tensor.storage_key = pid->items[2]->s;
    s->tensor.dtype = it->second;
    int64_t declared = as_int(pid->items[4], "storage numel");
    int64_t have = storage_numel_(s->tensor.storage_key, s->tensor.dtype);
    if (declared > have)
      fail("storage '" + s->tensor.storage_key + "' declares " + std::to_string(declared) + " elements but holds " +
           std::to_string(have));
    s->tensor.storage_numel = declared;
    return s;
  }
};

}  // namespace

// ---- the checkpoint ---------------------------------------------------------------------

static std::string find_prefix(const ZipReader& zip) {
  for (const auto& e : zip.entries()) {
    const std::string& n = e.name;
    if (n.size() > 9 && n.compare(n.size() - 9, 9, "/data.pkl") == 0 && n.find('/') == n.size() - 9)
      return n.substr(0, n.size() - 8);
    if (n == "data.pkl") return "";
  }
  return "#";
}

bool TorchCheckpoint::is_torch_zip(const std::string& path) {
  if (!ZipReader::looks_like_zip(path)) return false;
  try {
    ZipReader z(path);
    return find_prefix(z) != "#";
  } catch (const std::exception&) {
    return false;
  }
}

static ZipReader open_torch_zip(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open (no such file?)");
  uint8_t head[2] = {0, 0};
  f.read(reinterpret_cast<char*>(head), 2);
  if (f && head[0] == 0x80 && head[1] <= 5)
    throw std::runtime_error(path +
                             ": legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with a "
                             "current torch: torch.save(torch.load(\"" +
                             path + "\"), \"new.pth\")");
  if (!ZipReader::looks_like_zip(path))
    throw std::runtime_error(path + ": not a torch.save file (expected a zip archive starting with 'PK')");
  return ZipReader(path);
}

TorchCheckpoint::TorchCheckpoint(const std::string& path, const TorchLoadOptions& opt)
    : path_(path), zip_(open_torch_zip(path)) {
  prefix_ = find_prefix(zip_);
  if (prefix_ == "#") {
    for (const auto& e : zip_.entries())
      if (e.name.find("constants.pkl") != std::string::npos)
        throw std::runtime_error(path +
                                 ": a TorchScript archive (torch.jit.save), not a torch.save checkpoint; "
                                 "save model.state_dict() with torch.save instead");
    throw std::runtime_error(path + ": zip archive without <archive>/data.pkl: not a torch.save file");
  }
  if (const ZipEntry* bo = zip_.find(prefix_ + "byteorder")) {
    auto b = zip_.read(*bo);
    if (std::string(b.begin(), b.end()) != "little")
      throw std::runtime_error(path + ": byteorder '" + std::string(b.begin(), b.end()) +
                               "' (only little-endian is supported)");
  }
  std::vector<uint8_t> pkl = zip_.read(prefix_ + "data.pkl");
  auto storage_numel = [this](const std::string& key, const std::string& dtype) -> int64_t {
    const ZipEntry* e = zip_.find(prefix_ + "data/" + key);
    if (!e) throw std::runtime_error(path_ + ": storage '" + key + "' has no entry " + prefix_ + "data/" + key);
    return int64_t(e->size / uint64_t(safetensors_dtype_size(dtype)));
  };
  // A pickle can put a container inside itself (APPEND / SETITEM of a memoised object: pickle
  // fuzzer, a LeakSanitizer report); state dicts never do. Such a file is an error, and every
  // object the VM made is emptied so that the cycle is freed, on errors as well.
  std::vector<std::weak_ptr<PyObj>> created;
  struct Track {
    std::vector<std::weak_ptr<PyObj>>& c;
    const int unwinding = std::uncaught_exceptions();
    explicit Track(std::vector<std::weak_ptr<PyObj>>& c_) : c(c_) { g_created = &c; }
    ~Track() {
      g_created = nullptr;
      if (std::uncaught_exceptions() > unwinding) break_all(c);  // the VM threw
    }
  } track(created);
  {
    PickleVM vm(path_, pkl, opt, storage_numel);
    root_ = vm.run();
  }
  if (has_cycle(created)) {
    root_.reset();
    break_all(created);
    throw std::runtime_error(path_ + ": data.pkl builds a reference cycle (a container inside itself); "
                             "a state dict has none");
  }
}

FileTensor TorchCheckpoint::tensor(const TorchTensorRef& t) {
  if (cached_key_ != t.storage_key) {
    cached_.clear();
    cached_key_.clear();
    cached_ = zip_.read(prefix_ + "data/" + t.storage_key);
    cached_key_ = t.storage_key;
  }
  const int64_t isz = safetensors_dtype_size(t.dtype);
  FileTensor out;
  out.dtype = t.dtype;
  out.shape = t.shape;
  const int64_t n = t.numel();
  out.bytes.resize(size_t(n * isz));
  if (n == 0) return out;
  // bounds were checked when the view was built; check again against the bytes actually read
  int64_t last = t.offset;
  for (size_t k = 0; k < t.shape.size(); ++k) last += (t.shape[k] - 1) * t.stride[k];
  if ((last + 1) * isz > int64_t(cached_.size()))
    throw std::runtime_error(path_ + ": storage '" + t.storage_key + "' is too small for a tensor view " +
                             shape_str(t.shape));
  const uint8_t* src = cached_.data();
  uint8_t* dst = out.bytes.data();
  bool contiguous = true;
  for (int64_t k = int64_t(t.shape.size()) - 1, expect = 1; k >= 0; --k) {
    if (t.shape[size_t(k)] != 1 && t.stride[size_t(k)] != expect) contiguous = false;
    expect *= t.shape[size_t(k)];
  }
  if (contiguous) {
    std::memcpy(dst, src + t.offset * isz, size_t(n * isz));
    return out;
  }
  // strided gather in row-major order of the view
  const size_t R = t.shape.size();
  std::vector<int64_t> idx(R, 0);
  int64_t at = t.offset;
  for (int64_t e = 0; e < n; ++e) {
    std::memcpy(dst + e * isz, src + at * isz, size_t(isz));
    for (size_t k = R; k-- > 0;) {
      if (++idx[k] < t.shape[k]) {
        at += t.stride[k];
        break;
      }
      at -= (t.shape[k] - 1) * t.stride[k];
      idx[k] = 0;
    }
  }
  return out;
}

static void flatten_into(const PyRef& o, const std::string& prefix, int depth, const std::string& source,
                         std::vector<std::pair<std::string, PyRef>>& out) {
  const std::string who = source.empty() ? std::string("checkpoint") : source;
  if (depth > 64) throw std::runtime_error(who + ": nests deeper than 64 levels at '" + prefix + "' (cyclic?)");
  auto join = [&](const std::string& k) { return prefix.empty() ? k : prefix + "." + k; };
  if (o->kind == Kind::Dict) {
    for (const auto& [k, v] : o->dict) flatten_into(v, join(PyObj::key_text(k)), depth + 1, source, out);
    if (o->dict.empty() && !prefix.empty()) out.emplace_back(prefix, o);
  } else if (o->kind == Kind::List || o->kind == Kind::Tuple) {
    bool all_scalar = true;  // short lists of scalars (betas, flags) stay one leaf
    for (const auto& v : o->items)
      if (v->kind == Kind::Dict || v->kind == Kind::List || v->kind == Kind::Tuple || v->kind == Kind::Tensor)
        all_scalar = false;
    if (all_scalar) {
      out.emplace_back(prefix, o);
      return;
    }
    for (size_t k = 0; k < o->items.size(); ++k)
      flatten_into(o->items[k], join(std::to_string(k)), depth + 1, source, out);
  } else {
    out.emplace_back(prefix, o);
  }
}

// The number of leaves flatten_into would produce, counted over the object graph with each
// shared container counted once per use (memoised by address), saturating at 2^40.
static uint64_t count_leaves(const PyObj* o, int depth, std::unordered_map<const PyObj*, uint64_t>& memo,
                             const std::string& who) {
  if (depth > 64) throw std::runtime_error(who + ": nests deeper than 64 levels (cyclic?)");
  auto it = memo.find(o);
  if (it != memo.end()) return it->second;
  uint64_t n = 0;
  auto add = [&](uint64_t k) { n = std::min<uint64_t>(n + k, uint64_t(1) << 40); };
  if (o->kind == Kind::Dict) {
    for (const auto& kv : o->dict) add(count_leaves(kv.second.get(), depth + 1, memo, who));
    if (o->dict.empty()) add(1);
  } else if (o->kind == Kind::List || o->kind == Kind::Tuple) {
    bool all_scalar = true;
    for (const auto& v : o->items)
      if (v->kind == Kind::Dict || v->kind == Kind::List || v->kind == Kind::Tuple || v->kind == Kind::Tensor)
        all_scalar = false;
    if (all_scalar) {
      add(1);
    } else {
      for (const auto& v : o->items) add(count_leaves(v.get(), depth + 1, memo, who));
    }
  } else {
    add(1);
  }
  memo[o] = n;
  return n;
}

std::vector<std::pair<std::string, PyRef>> flatten_pyobj(const PyRef& root, const std::string& source) {
  std::vector<std::pair<std::string, PyRef>> out;
  if (!root) return out;
  // A pickle can use one container many times (its memo): 40 levels of [a, a] are 2^40 leaves
  // from a few hundred bytes (pickle fuzzer). Real state dicts have thousands of entries.
  const std::string who = source.empty() ? std::string("checkpoint") : source;
  std::unordered_map<const PyObj*, uint64_t> memo;
  const uint64_t n = count_leaves(root.get(), 0, memo, who);
  if (n > (uint64_t(1) << 20))
    throw std::runtime_error(who + ": " + (n >= (uint64_t(1) << 40) ? std::string("2^40 or more") : std::to_string(n)) +
                             " entries when flattened, more than 1048576 (a container shared many times?)");
  flatten_into(root, "", 0, source, out);
  return out;
}

}  // namespace ms
