// Test program for symbol-resolver: C++ (Itanium-mangled) names.
namespace geo {
__attribute__((noipa)) int scale(int v, double f) {
    return static_cast<int>(v * f);
}
}  // namespace geo

template <typename T>
__attribute__((noipa)) T twice(T v) {
    return v + v;
}

int main(int argc, char **) {
    return geo::scale(argc, 1.5) + static_cast<int>(twice<long>(argc));
}
