# .\build.ps1          build everything
# .\build.ps1 test     build, then run every test
# .\build.ps1 bench    run the benchmarks (Release)
param([string]$Command = "build")
$ErrorActionPreference = "Stop"
Set-Location $PSScriptRoot

function Build-Native {
    if ((Test-Path native/CMakeLists.txt) -and (Get-Command cmake -ErrorAction SilentlyContinue)) {
        cmake -S native -B build/native -DCMAKE_BUILD_TYPE=Release | Out-Null
        cmake --build build/native --config Release
    } else {
        Write-Host "native: cmake not found, skipping kernels and emulator"
    }
}

switch ($Command) {
    "build" { Build-Native; dotnet build LoRI.Native.sln -c Release }
    "test"  { Build-Native; dotnet test LoRI.Native.sln -c Release --logger "trx;LogFileName=r.trx" --results-directory TestResults }
    "bench" { Build-Native; dotnet run -c Release --project bench/LoRI.Bench -- $args }
    default { Write-Error "usage: .\build.ps1 [build|test|bench]"; exit 2 }
}
