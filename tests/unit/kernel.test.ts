import { atLeast, minimumKernel, missingKernelFacilities, parseKernelRelease } from "../../src/kernel";

test("parseKernelRelease reads major.minor of the releases distributions print", () => {
  expect(parseKernelRelease("6.1.0-50-amd64")).toEqual({ major: 6, minor: 1 });
  expect(parseKernelRelease("3.10.0-1160.el7.x86_64")).toEqual({ major: 3, minor: 10 });
  expect(parseKernelRelease("6.18.44-fc-v657")).toEqual({ major: 6, minor: 18 });
  expect(parseKernelRelease("weird")).toBeUndefined();
});

test("atLeast compares major before minor (4.19 < 5.2 < 5.10)", () => {
  expect(atLeast({ major: 5, minor: 10 }, { major: 5, minor: 2 })).toBe(true);
  expect(atLeast({ major: 4, minor: 19 }, { major: 5, minor: 2 })).toBe(false);
  expect(atLeast({ major: 4, minor: 4 }, { major: 4, minor: 4 })).toBe(true);
});

test("missingKernelFacilities names what an old kernel lacks, with the release that brought it; nothing for 4.4 and later", () => {
  expect(minimumKernel()).toBe("4.4");
  const rhel7 = missingKernelFacilities("3.10.0-1160.el7.x86_64");
  expect(rhel7).toEqual([
    expect.stringMatching(/PTRACE_GETSIGMASK.*Linux 3\.11$/),
    expect.stringMatching(/PTRACE_O_SUSPEND_SECCOMP, Linux 4\.3$/),
    expect.stringMatching(/mlock2 and MCL_ONFAULT.*Linux 4\.4$/),
  ]);
  expect(missingKernelFacilities("4.3.0")).toEqual([expect.stringMatching(/mlock2/)]);
  for (const ok of ["4.4.0", "4.19.0-27-amd64", "5.10.0-32-amd64", "6.12.117-amd64"]) expect(missingKernelFacilities(ok)).toEqual([]);
  // An unreadable release is not refused (the calls themselves would then fail cleanly).
  expect(missingKernelFacilities("unknown")).toEqual([]);
});
